"""experiments/nano/curve.py: samples seen counted across stages, one table row per val point, the plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mmcompress.data.synthvqa import CATEGORIES
from tests.experiments import load_script


@pytest.fixture(scope="module")
def curve_script():
    yield load_script("nano/curve.py", "nano_curve")
    del sys.modules["nano_curve"]


def _scores(overall: float) -> dict:
    return {
        "overall": overall,
        "categories": {c: overall + 0.001 * k for k, c in enumerate(CATEGORIES)},
        "yes_no": {"splits": {"existence": {"yes_ratio": 0.99}, "position": {"yes_ratio": 0.6}}},
    }


@pytest.fixture
def run(tmp_path) -> Path:
    """A finished two-stage run: align 10 steps × 4, finetune 20 steps × 8, val every 10 steps."""
    config = {
        "stages": ["align", "finetune", "eval"],
        "stage": {"align": {"steps": 10, "batch_size": 4}, "finetune": {"steps": 20, "batch_size": 8}},
        "world": {"train_images": 50, "questions_per_image": 4},
        "data": {"max_train_samples": None},
    }
    OmegaConf.save(OmegaConf.create(config), tmp_path / "config.yaml")
    records = [{"stage": "align", "step": s, "loss": 3.0 / s} for s in (5, 10)]
    records += [{"stage": "finetune", "step": s, "loss": 0.1 * (21 - s)} for s in (5, 10, 15, 20)]
    for stage, step, overall in (("align", 10, 0.3), ("finetune", 10, 0.5), ("finetune", 20, 0.6)):
        values = {"overall": overall} | {c: overall for c in CATEGORIES}
        records.append({"stage": stage, "step": step} | {f"val/{k}": v for k, v in values.items()})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    summary = {
        "stages": {"align": {"steps": 10}, "finetune": {"steps": 20}},
        "scores": {"synthvqa": _scores(0.62)},
        "val_scores": {"synthvqa": _scores(0.61)},
        "baselines": {"synthvqa": {"majority": 0.292}},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_samples_seen_continue_across_stages(curve_script, run):
    curve = curve_script.load_curve(run)
    assert curve.stage_starts == {"align": 0, "finetune": 40}
    assert curve.epoch == 200
    assert [(p["stage"], p["samples"], p["overall"]) for p in curve.val] == [
        ("align", 40, 0.3),
        ("finetune", 120, 0.5),
        ("finetune", 200, 0.6),
    ]
    assert curve.loss[:3] == [(20, 0.6), (40, 0.3), (80, pytest.approx(1.6))]


def test_table_has_a_row_per_val_point_then_the_final_splits(curve_script, run):
    lines = curve_script.table(curve_script.load_curve(run))
    assert lines[2].startswith("| align | 10 | 40 | 0.20 |") and lines[2].endswith("| **0.300** |")
    assert lines[4].startswith("| finetune | 20 | 200 | 1.00 |")
    assert lines[5].startswith("| final val, whole split | 30 steps |") and "**0.610**" in lines[5]
    assert lines[6].startswith("| final test, whole split |") and "| 0.625 |" in lines[6]  # text, the 6th
    assert len(lines) == 7
    text = curve_script.yes_ratios(curve_script.load_curve(run))
    assert text.endswith("existence 0.99, position 0.60.")


def test_a_capped_train_split_is_a_shorter_epoch(curve_script, run):
    config = OmegaConf.load(run / "config.yaml")
    config.data.max_train_samples = 120
    OmegaConf.save(config, run / "config.yaml")
    assert curve_script.load_curve(run).epoch == 120


def test_plot_and_a_run_without_val(curve_script, run, tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "curve.png"
    curve_script.main(run, out)
    from PIL import Image

    assert Image.open(out).size == (1210, 440)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(line for line in lines if "val/" not in line))
    with pytest.raises(SystemExit, match=r"train\.val_every"):
        curve_script.main(run)
