"""experiments/default-learning-bar/collect.py: one row per complete seed, margins over the blind baseline,
overall as mean ± std (n) and the code version."""

from __future__ import annotations

import json

import pytest

from mmcompress.data.synthvqa import CATEGORIES
from tests.experiments import load_script


@pytest.fixture(scope="module")
def collect():
    return load_script("default-learning-bar/collect.py", "learning_bar_collect")


def test_table_rows_margins_and_version(collect, tmp_path):
    for seed, overall, status in ((0, 0.90, "complete"), (1, 0.88, "complete"), (2, 0.0, "failed")):
        run = tmp_path / f"clip_tiny_synthvqa_s{seed}-abcd"
        run.mkdir()
        baselines = {"majority": 0.3, "categories": {c: {"majority": 0.2} for c in CATEGORIES}}
        run.joinpath("summary.json").write_text(
            json.dumps(
                {
                    "run_id": run.name,
                    "status": status,
                    "wall_time_s": 60,
                    "env": {"code_version": "abc"},
                    "scores": {
                        "synthvqa": {"overall": overall, "categories": dict.fromkeys(CATEGORIES, overall)}
                    },
                    "baselines": {"synthvqa": baselines},
                }
            )
        )
    text = collect.table(tmp_path)
    rows = text.splitlines()
    assert rows[2].startswith("| 0 | 0.900") and rows[3].startswith("| 1 | 0.880") and "| 2 |" not in text
    assert "| mean margin | +0.690 |" in text  # (0.90 + 0.88) / 2 − 0.2
    assert "**0.890 ± 0.014 (n=2)**" in text and "Code version: abc." in text
