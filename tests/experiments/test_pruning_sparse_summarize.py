"""experiments/pruning-sparse/summarize.py: the best method per budget is chosen on val (never test) and
called best only beyond 2 SE; the share kept pairs each seed with its own unpruned model; the val curve
says whether the unpruned model had stopped improving; mixed code versions are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmcompress.data.synthvqa import CATEGORIES
from tests.experiments import load_script


@pytest.fixture(scope="module")
def summarize():
    return load_script("pruning-sparse/summarize.py", "pruning_sparse_summarize")


def _run(
    record: Path,
    phase: str,
    name: str,
    seed: int,
    method: str,
    ratio,
    test: float,
    val: float,
    tokens: float,
    version: str = "v1",
    curve: tuple[float, ...] = (),
) -> None:
    run = record / phase / name
    run.mkdir(parents=True)
    ratio_text = "null" if ratio is None else ratio
    (run / "config.yaml").write_text(f"seed: {seed}\npruning:\n  name: {method}\n  ratio: {ratio_text}\n")

    def score(value):
        return {"synthvqa": {"overall": value, "categories": dict.fromkeys(CATEGORIES, value)}}

    (run / "summary.json").write_text(
        json.dumps(
            {
                "status": "complete",
                "scores": score(test),
                "val_scores": score(val),
                "visual_tokens": {"mean": tokens},
                "env": {"code_version": version},
            }
        )
    )
    (run / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"stage": "finetune", "step": 300 * (i + 1), "val/overall": v}) + "\n"
            for i, v in enumerate(curve)
        )
    )


def _world(record: Path, rising: bool = False, last_version: str = "v1") -> None:
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        last = 0.80 if rising else 0.60
        _run(
            record,
            "sparse",
            f"u{seed}",
            seed,
            "none",
            None,
            0.60 + jitter,
            0.61 + jitter,
            256,
            curve=(0.40 + jitter, 0.60 + jitter, last + jitter),
        )
        # training-free: spatial is best on val but worst on test; topk ties with random on val
        _run(record, "sparse-free", f"s{seed}", seed, "spatial", 0.11, 0.40 + jitter, 0.55 + jitter, 28)
        _run(record, "sparse-free", f"r{seed}", seed, "random", 0.11, 0.50 + jitter, 0.45 + jitter, 28)
        _run(record, "sparse-free", f"p{seed}", seed, "prumerge", None, 0.30 + jitter, 0.30 + jitter, 40.5)
        _run(record, "sparse-free", f"k{seed}", seed, "topk", 0.055, 0.30 + 3 * jitter, 0.30 + 3 * jitter, 14)
        _run(record, "sparse-free", f"q{seed}", seed, "random", 0.055, 0.31 + jitter, 0.31 + jitter, 14)
        version = last_version if seed == 2 else "v1"
        _run(
            record,
            "sparse-trained",
            f"t{seed}",
            seed,
            "visionzip",
            0.11,
            0.59 + jitter,
            0.60 + jitter,
            28,
            version=version,
        )
        _run(record, "sparse-trained", f"v{seed}", seed, "visionzip", 0.055, 0.48, 0.50 + jitter, 14)
        # the control: the finetune stage retrained as long without pruning
        _run(record, "sparse-trained", f"n{seed}", seed, "none", None, 0.62 + jitter, 0.61 + jitter, 256)


def test_val_selection_ties_pairing_and_targets(summarize, tmp_path):
    _world(tmp_path)
    result = summarize.summarize(summarize.load(tmp_path))
    unpruned = result["unpruned"]
    assert unpruned["test"].mean == pytest.approx(0.60) and unpruned["test"].n == 3
    assert unpruned["convergence"]["converged"] is True  # 0.60 → 0.60: no rise
    free = result["sparse-free"]
    assert free["best"][0.11] == {"method": "spatial", "separated": True, "ties": {}}  # val, not test
    tied = free["best"][0.055]
    assert tied["method"] == "random" and not tied["separated"] and "topk" in tied["ties"]
    assert ("prumerge", "adaptive") in free["rows"]
    # trained with pruning: kept pairs each seed with its control (the same retraining, unpruned)
    assert result["reference"] == "control"
    kept = result["sparse-trained"]["rows"][("visionzip", 0.11)]["kept"]
    assert kept.mean == pytest.approx(0.59 / 0.62, abs=2e-3) and kept.n == 3
    control = result["sparse-trained"]["rows"][("none", 1.0)]["kept"]  # against the unpruned model
    assert control.mean == pytest.approx(0.62 / 0.60, abs=2e-3) and control.n == 3
    free_kept = result["sparse-free"]["rows"][("random", 0.11)]["kept"]  # training-free: the unpruned model
    assert free_kept.mean == pytest.approx(0.50 / 0.60, abs=2e-3)
    targets = result["targets"]
    assert targets[0.11]["met"] is True  # 95.2% ≥ 95%
    assert targets[0.055]["met"] is False  # 77% < 90%
    text = summarize.markdown(result)
    assert "| spatial **best** | 11.0% | 3 |" in text
    assert "5.5%: random has the best val mean but ties with topk" in text
    assert "**not met**" in text


def test_a_still_rising_val_curve_is_not_converged(summarize, tmp_path):
    _world(tmp_path, rising=True)
    convergence = summarize.summarize(summarize.load(tmp_path))["unpruned"]["convergence"]
    assert convergence["converged"] is False and "still rising" in convergence["why"]


def test_mixed_code_versions_are_refused_unless_allowed(summarize, tmp_path):
    _world(tmp_path, last_version="v2")
    with pytest.raises(SystemExit, match="code versions v1, v2"):
        summarize.load(tmp_path)
    assert summarize.load(tmp_path, allow_mixed_versions=True)["sparse-trained"]


def test_main_writes_the_table_json_and_plot(summarize, tmp_path):
    _world(tmp_path / "record")
    summarize.main([str(tmp_path / "record"), str(tmp_path / "out")])
    assert (tmp_path / "out" / "accuracy_vs_tokens.png").stat().st_size > 10_000
    stored = json.loads((tmp_path / "out" / "result.json").read_text())
    assert stored["sparse-trained"]["rows"]["visionzip@0.11"]["kept"]["n"] == 3
    assert "Target at 11.0%" in (tmp_path / "out" / "result.md").read_text()
