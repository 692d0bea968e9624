"""experiments/position/summarize.py: arms by projector.positions, the other five categories' mean, and the
difference from the arm without positions marked only beyond 2 standard errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmcompress.data.synthvqa import CATEGORIES
from tests.experiments import load_script


@pytest.fixture(scope="module")
def summarize():
    return load_script("position/summarize.py", "position_summarize")


def _run(root: Path, name: str, positions: int, position: float, others: float, status="complete") -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"projector:\n  name: mlp\n  positions: {positions}\n  position_at: output\n"
    )
    categories = {c: (position if c == "position" else others) for c in CATEGORIES}
    overall = sum(categories.values()) / len(categories)
    scores = {"synthvqa": {"overall": overall, "categories": categories}}
    (run / "summary.json").write_text(json.dumps({"status": status, "scores": scores, "val_scores": scores}))


def test_arms_the_other_five_and_the_marked_difference(summarize, tmp_path):
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        _run(tmp_path, f"a{seed}", 0, 0.50 + jitter, 0.90 + jitter)
        _run(tmp_path, f"b{seed}", 4, 0.85 + jitter, 0.895 + jitter)
    _run(tmp_path, "failed", 4, 0.0, 0.0, status="failed")  # left out
    found = summarize.arms(tmp_path)
    assert {arm: len(runs) for arm, runs in found.items()} == {"none": 3, "4 at output": 3}
    assert list(found) == ["none", "4 at output"]
    assert summarize.measures(found["none"][0])["other five"] == pytest.approx(0.90)
    text = summarize.table(found)
    position_delta, other_delta = text.splitlines()[4].split(" | ")[4], text.splitlines()[4].split(" | ")[7]
    assert position_delta.startswith("**+0.350**")  # 0.35 ≫ 2 SE (0.016)
    assert other_delta.startswith("-0.005 ")  # within the noise: not marked
    assert "0.500 ± 0.010 (n=3)" in text
