"""End to end on debug=fast: the run directory contract, stage skipping, and re-evaluation from checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer, CLIPVisionModel, LlamaForCausalLM

from mmcompress.data.llava import IMAGE_TOKEN
from mmcompress.rundir import SCHEMA_VERSION, STATUSES
from tests.conftest import cli

STAGES = ("prealign", "align", "finetune")


def test_run_directory_contract(fast_run):
    for name in ("config.yaml", "overrides.txt", "metrics.jsonl", "summary.json", "eval/synthvqa.jsonl"):
        assert (fast_run / name).is_file(), name
    assert "debug=fast" in (fast_run / "overrides.txt").read_text()
    metrics = [json.loads(line) for line in (fast_run / "metrics.jsonl").read_text().splitlines()]
    assert {m["stage"] for m in metrics} == set(STAGES)
    assert all({"step", "loss", "lr", "samples_per_s"} <= set(m) for m in metrics)
    for stage in STAGES:
        marker = json.loads((fast_run / "checkpoints" / stage / "stage.json").read_text())
        assert marker["status"] == "complete" and marker["steps"] > 0
        assert (fast_run / "checkpoints" / stage / "modules.safetensors").is_file()
        assert not (fast_run / "checkpoints" / f"{stage}.resume").exists()  # removed once complete


def test_summary_schema(fast_run):
    summary = json.loads((fast_run / "summary.json").read_text())
    assert summary["schema_version"] == SCHEMA_VERSION
    assert summary["status"] == "complete" and summary["status"] in STATUSES
    scores = summary["scores"]["synthvqa"]
    assert 0 <= scores["overall"] <= 1 and scores["overall_definition"] and scores["metric_definition"]
    assert set(scores["categories"]) == {"color", "shape", "count", "position", "existence", "text"}
    assert all(0 <= v <= 1 for v in scores["categories"].values())
    assert set(scores["category_n"].values()) == {4}  # fixed count per category (debug=fast: 4)
    assert scores["n"] == sum(scores["category_n"].values())
    mean = sum(scores["categories"].values()) / 6
    assert abs(scores["overall"] - mean) < 1e-3  # overall is the mean over categories
    baselines = summary["baselines"]["synthvqa"]
    assert 0 <= baselines["majority"] <= 1 and 0 < baselines["chance"] <= 1 and baselines["definition"]
    assert {"mean", "min", "max"} <= set(summary["visual_tokens"]) and summary["visual_tokens"]["max"] == 64
    assert summary["wall_time_s"] > 0
    assert {"git_sha", "torch", "transformers", "python"} <= set(summary["env"])
    assert summary["experts"]["clip"]["grid"] == [8, 8] and summary["experts"]["clip"]["input_size"] == [
        64,
        64,
    ]
    weights = summary["weights"]  # where each model really came from
    assert weights["llm"] == {"source": "run"}  # the tiny LLM is built inside the run
    assert weights["clip"]["source"] == "local" and "clip-mini-" in weights["clip"]["path"]


def test_checkpoints_load_with_from_pretrained(fast_run):
    llm_dir = fast_run / "checkpoints" / "finetune" / "llm"
    model = LlamaForCausalLM.from_pretrained(llm_dir)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    assert tokenizer.chat_template and IMAGE_TOKEN in tokenizer.get_vocab()
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    expert = CLIPVisionModel.from_pretrained(fast_run / "checkpoints" / "init" / "experts" / "clip")
    assert expert.config.image_size == 64


def test_rerun_skips_completed_stages(fast_run):
    before = {s: (fast_run / "checkpoints" / s / "stage.json").stat().st_mtime_ns for s in STAGES}
    result = cli(
        "train", "debug=fast", "logger=none", f"run_dir={fast_run}", "stages=[prealign,align,finetune]"
    )
    for stage in STAGES:
        assert f"stage {stage} is complete; skipped" in result.stderr
        assert (fast_run / "checkpoints" / stage / "stage.json").stat().st_mtime_ns == before[stage]


def test_eval_regenerates_identical_predictions(fast_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(fast_run, copy)
    before_preds = (copy / "eval" / "synthvqa.jsonl").read_text()
    before_scores = json.loads((copy / "summary.json").read_text())["scores"]
    shutil.rmtree(copy / "eval")
    config = OmegaConf.load(copy / "config.yaml")  # as a run made before these settings existed
    del config.train.num_workers, config.train.feature_store_max_gb
    OmegaConf.save(config, copy / "config.yaml")
    cli("eval", str(copy))
    assert (copy / "eval" / "synthvqa.jsonl").read_text() == before_preds
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["scores"] == before_scores
    assert summary["status"] == "complete" and "stages" in summary  # eval added, did not overwrite


@pytest.mark.slow  # an end-to-end CLI run
def test_eval_overrides_and_bad_run_dir(fast_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(fast_run, copy)
    cli("eval", str(copy), "eval.split=val")
    assert json.loads((copy / "summary.json").read_text())["scores"]["synthvqa"]["split"] == "val"
    bad = cli("eval", str(tmp_path / "nope"), check=False)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    unknown = cli("eval", str(copy), "eval.splitt=val", check=False)
    assert unknown.returncode == 2 and "unknown config key 'eval.splitt'" in unknown.stderr


@pytest.mark.slow  # an end-to-end CLI run
def test_stage_cannot_run_after_a_later_one(cache_dir, tmp_path):
    run = tmp_path / "run"
    cli("train", "debug=fast", "logger=none", f"run_dir={run}", "stages=[align]")
    result = cli(
        "train", "debug=fast", "logger=none", f"run_dir={run}", "stages=[prealign,align]", check=False
    )
    assert result.returncode != 0 and "stage prealign would run after align" in result.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert (run / "checkpoints" / "align" / "stage.json").is_file()  # nothing already written is lost


def test_val_every_logs_per_category_val_curves(cache_dir, tmp_path):
    run = tmp_path / "run"
    cli("train", "debug=fast", "logger=none", f"run_dir={run}", "stages=[finetune]", "train.val_every=2")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [m for m in metrics if "val/overall" in m]
    assert [m["step"] for m in val] == [2, 4]  # every 2 of debug=fast's 4 finetune steps
    categories = {"color", "shape", "count", "position", "existence", "text"}
    assert all({f"val/{c}" for c in categories} <= set(m) and 0 <= m["val/overall"] <= 1 for m in val)
