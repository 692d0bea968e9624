"""Pruning end to end through the CLI: PruMerge and PruMerge+ train and evaluate with CLIP alone and with
CLIP+SAM, a finished run is evaluated training-free under another pruning setting (`init_from`), VisionZip and
DivPrune included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli


def _summary(result) -> dict:
    run = Path(result.stdout.strip().splitlines()[-1])
    return json.loads((run / "summary.json").read_text()) | {"run": run}


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["clip", "clip+sam"])
@pytest.mark.parametrize("pruning", ["prumerge", "prumerge_plus"])
def test_prumerge_trains_and_evaluates(cache_dir, tmp_path, encoder, pruning):
    summary = _summary(
        cli(
            "train",
            "debug=fast",
            "logger=none",
            f"paths.runs={tmp_path}",
            f"encoder={encoder}",
            f"pruning={pruning}",
        )
    )
    assert summary["status"] == "complete"
    tokens, flops = summary["visual_tokens"], summary["llm_prefill_flops"]
    assert 1 <= tokens["min"] <= tokens["mean"] <= tokens["max"] <= 64 and tokens["mean"] < 64
    assert flops["min"] <= flops["mean"] <= flops["max"] and flops["ratio"] < 1
    records = [
        json.loads(line) for line in (summary["run"] / "eval" / "synthvqa.jsonl").read_text().splitlines()
    ]
    assert min(r["visual_tokens"] for r in records) == tokens["min"]


@pytest.mark.slow  # an end-to-end CLI run
def test_a_finished_run_is_evaluated_training_free_under_another_pruning(fast_run, tmp_path):
    result = cli(
        "train", "debug=fast", "logger=none", f"paths.runs={tmp_path}", f"init_from={fast_run}", "stages=[eval]",
        "pruning=topk", "pruning.ratio=0.25",
    )  # fmt: skip
    summary = _summary(result)
    assert summary["run"] != fast_run and "stage prealign" not in result.stderr  # nothing retrained
    assert summary["visual_tokens"]["mean"] == 16 and summary["llm_prefill_flops"]["ratio"] < 1
    before = json.loads((fast_run / "summary.json").read_text())
    assert before["visual_tokens"]["mean"] == 64  # the source run is untouched

    wrong = cli(
        "train", "debug=fast", "logger=none", f"paths.runs={tmp_path}", f"init_from={fast_run}", "stages=[eval]",
        "encoder=clip+sam", check=False,
    )  # fmt: skip
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "init_from" in wrong.stderr and "encoder" in wrong.stderr


@pytest.mark.slow  # an end-to-end CLI run
@pytest.mark.parametrize("pruning", ["visionzip", "divprune"])
def test_the_baselines_evaluate_a_finished_run_training_free(fast_run, tmp_path, pruning):
    overrides = [
        "debug=fast",
        "logger=none",
        f"paths.runs={tmp_path}",
        f"init_from={fast_run}",
        "stages=[eval]",
    ]
    summary = _summary(cli("train", *overrides, f"pruning={pruning}", "pruning.ratio=0.25"))
    assert summary["status"] == "complete" and summary["visual_tokens"]["mean"] == 16
    assert 0 <= summary["scores"]["synthvqa"]["overall"] <= 1
