"""Tests of the experiments' analysis scripts, each loaded from its file as `python experiments/…` runs it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def load_script(relative: str, name: str) -> ModuleType:
    """experiments/<relative> as module `name` (registered in sys.modules: dataclasses look it up there)."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fake_run(
    path: Path,
    config: str,
    test: float,
    val: float,
    tokens: float,
    version: str = "v1",
    curve: tuple[float, ...] = (),
) -> None:
    """A finished run directory as `mmcompress train` leaves it: config.yaml (the given YAML), summary.json
    with every synthvqa category at the overall score, and metrics.jsonl with val checks every 300 steps."""
    from mmcompress.data.synthvqa import CATEGORIES

    path.mkdir(parents=True)
    (path / "config.yaml").write_text(config)

    def score(value: float) -> dict:
        return {"synthvqa": {"overall": value, "categories": dict.fromkeys(CATEGORIES, value)}}

    summary = {
        "status": "complete",
        "scores": score(test),
        "val_scores": score(val),
        "visual_tokens": {"mean": tokens},
        "baselines": {"synthvqa": {"majority": 0.29}},
        "env": {"code_version": version},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"stage": "finetune", "step": 300 * (i + 1), "val/overall": v}) + "\n"
            for i, v in enumerate(curve)
        )
    )
