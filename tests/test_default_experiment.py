"""The learning bar: `mmcompress train` with no overrides must clearly beat the blind baseline.

Runs the real default experiment from an empty cache, exactly as on a new machine: the data is generated
and the shipped mini expert is used. Only the output location differs from a user's run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .conftest import cli

MARGIN = 0.45  # overall ≥ blind majority + 0.45
COLOR_MIN = 0.95
EXISTENCE_MIN = 0.85


@pytest.mark.slow
@pytest.mark.default_experiment
def test_default_experiment_learns_from_the_images(tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    start = time.time()
    # ~7 minutes alone on 2 cores; the generous limit only guards against a hang within CI's 90 minutes
    result = cli("train", f"paths.runs={runs}", env={"MMCOMPRESS_CACHE": str(cache)}, timeout=3600)
    elapsed = time.time() - start
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    scores, baseline = summary["scores"]["synthvqa"], summary["baselines"]["synthvqa"]
    report = {
        "wall_time_s": round(elapsed, 1),
        "overall": scores["overall"],
        "majority": baseline["majority"],
        **scores["categories"],
    }
    print(json.dumps(report))  # visible with -s and in CI logs on failure
    if os.environ.get("MMCOMPRESS_BAR_RECORD"):
        Path(os.environ["MMCOMPRESS_BAR_RECORD"]).write_text(json.dumps(report, indent=2))
    assert summary["status"] == "complete"
    assert set(scores["category_n"].values()) == {200}
    assert scores["overall"] >= baseline["majority"] + MARGIN, report
    assert scores["categories"]["color"] >= COLOR_MIN, report
    assert scores["categories"]["existence"] >= EXISTENCE_MIN, report
