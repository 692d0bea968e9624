"""Data-parallel training under torchrun (gloo on CPU): results do not depend on the number of processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli

STEPS = ["stage.prealign.steps=3", "stage.align.steps=3", "stage.finetune.steps=50"]
BASE = ["train", "debug=fast", "logger=none", "eval.max_samples=8", *STEPS]


def _train(runs: Path, *overrides: str) -> tuple[Path, list[dict]]:
    result = cli(*BASE, f"paths.runs={runs}", *overrides)
    run = Path(result.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, [r for r in records if "loss" in r]


def _assert_same_losses(mine: list[dict], reference: list[dict], rtol: float) -> None:
    assert [(r["stage"], r["step"]) for r in mine] == [(r["stage"], r["step"]) for r in reference]
    assert len(mine) >= 50  # the first 50 optimizer steps, logged every step
    for a, b in zip(mine, reference, strict=True):
        assert abs(a["loss"] - b["loss"]) <= rtol * abs(b["loss"]), (a, b)


@pytest.fixture(scope="module")
def one_process(cache_dir, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("one"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["distributed.strategy=ddp"],
        # FSDP2, and gradient accumulation on top: each process's 4 samples in micro-batches of 3 + 1
        ["distributed.strategy=fsdp", "train.micro_batch_size=3"],
    ],
    ids=["ddp", "fsdp-accumulating"],
)
def test_two_processes_match_one(one_process, tmp_path, overrides):
    """`distributed.nproc=2` relaunches under torchrun; the global batch is split, not doubled, so each
    step's loss is the one-process loss (within 1e-3 relative), and only rank 0 writes."""
    _, reference = one_process
    run, records = _train(tmp_path, "distributed.nproc=2", *overrides)
    _assert_same_losses(records, reference, rtol=1e-3)
    assert [p.name for p in tmp_path.glob("default/*")] == [run.name]  # one run directory
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and "synthvqa" in summary["scores"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "align",
        "finetune",
        "init",
        "prealign",
    ]
