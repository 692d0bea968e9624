"""experiments/nano/summarize.py: arms grouped by experts, mean ± std with n, and the 2-standard-error rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmcompress.data.synthvqa import CATEGORIES
from tests.experiments import load_script


@pytest.fixture(scope="module")
def summarize():
    return load_script("nano/summarize.py", "nano_summarize")


def _write_run(root: Path, name: str, experts: list[str], overall: float, status: str = "complete") -> None:
    run = root / name
    run.mkdir(parents=True)
    categories = dict.fromkeys(CATEGORIES, overall)
    summary = {
        "status": status,
        "experts": {e: {} for e in experts},
        "scores": {"synthvqa": {"overall": overall, "categories": categories}},
        "val_scores": {"synthvqa": {"overall": overall - 0.01}},
        "baselines": {
            "synthvqa": {"majority": 0.292, "categories": {c: {"majority": 0.25} for c in CATEGORIES}}
        },
        "stages": {"align": {"wall_time_s": 420.0}, "finetune": {"wall_time_s": 480.0}},
        "env": {"code_version": "abcdef0123456789"},
    }
    (run / "summary.json").write_text(json.dumps(summary))


def test_arms_are_grouped_by_experts_and_failed_runs_left_out(summarize, tmp_path):
    for seed, value in enumerate((0.50, 0.52, 0.54)):
        _write_run(tmp_path / "nano", f"mix-s{seed}", ["dinov2", "clip"], value)
    _write_run(tmp_path / "nano", "alone-s0", ["dinov2"], 0.40)
    _write_run(tmp_path / "nano", "broken", ["dinov2"], 0.99, status="failed")
    arms = summarize.load_runs(tmp_path)
    assert {arm: len(runs) for arm, runs in arms.items()} == {"dinov2+clip": 3, "dinov2": 1}
    copies = tmp_path / "summaries"  # what run.sh keeps: <run id>.json
    copies.mkdir()
    for summary in (tmp_path / "nano").glob("*/summary.json"):
        (copies / f"{summary.parent.name}.json").write_text(summary.read_text())
    assert {a: len(r) for a, r in summarize.load_runs(copies).items()} == {"dinov2+clip": 3, "dinov2": 1}
    lines = summarize.table(arms)
    mix = next(line for line in lines if line.startswith("| dinov2+clip |"))
    assert (
        "| 3 |" in mix and "**0.520 ± 0.020**" in mix and "0.510 ± 0.020" in mix and "15.0 ± 0.0 min" in mix
    )
    assert "abcdef0123" in mix
    text = "\n".join(summarize.comparisons(arms))
    assert "not compared (fewer than 3 seeds)" in text  # one seed of DINOv2 alone
    assert "dinov2+clip vs the probe's 0.46: +0.060 (above by more than 2 standard errors)" in text


def test_two_standard_errors_separate_or_tie(summarize):
    assert summarize.separated([0.50, 0.51, 0.52], [0.40, 0.41, 0.42]) is True
    assert summarize.separated([0.50, 0.60, 0.40], [0.45, 0.55, 0.50]) is False
    assert summarize.separated([0.5, 0.6], [0.4, 0.4, 0.4]) is None


def test_plot_draws_every_arm(summarize, tmp_path):
    for seed, value in enumerate((0.50, 0.52, 0.54)):
        _write_run(tmp_path / "nano", f"mix-s{seed}", ["dinov2", "clip"], value)
    _write_run(tmp_path / "nano", "alone-s0", ["dinov2"], 0.40)
    out = tmp_path / "nano.png"
    summarize.main(tmp_path, out)
    from PIL import Image

    assert Image.open(out).size == (960, 432)
