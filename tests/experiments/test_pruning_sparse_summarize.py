"""experiments/pruning-sparse/summarize.py: the best method per budget is chosen on val (never test) and
called best only beyond 2 SE; the share kept pairs each seed with its own unpruned model; the val curve
says whether the unpruned model had stopped improving; mixed code versions are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiments import fake_run, load_script


@pytest.fixture(scope="module")
def summarize():
    return load_script("pruning-sparse/summarize.py", "pruning_sparse_summarize")


def _run(
    record: Path, phase: str, name: str, seed: int, method: str, ratio, *scores, steps=1500, **kw
) -> None:
    ratio_text = "null" if ratio is None else ratio
    config = f"seed: {seed}\npruning:\n  name: {method}\n  ratio: {ratio_text}\nstage:\n  finetune:\n    steps: {steps}\n"
    fake_run(record / phase / name, config, *scores, **kw)


def _world(record: Path, rising: bool = False, last_version: str = "v1", longer: float | None = None) -> None:
    """Three seeds of every phase; `longer`: the twice-as-long unpruned model's val (none without)."""
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        last = 0.80 if rising else 0.60
        curve = (0.40 + jitter, 0.60 + jitter, last + jitter)
        _run(record, "sparse", f"u{seed}", seed, "none", None, 0.60 + jitter, 0.61 + jitter, 256, curve=curve)
        if longer is not None:
            _run(
                record, "sparse-long", f"l{seed}", seed, "none", None, 0.64, longer + jitter, 256, steps=3000
            )
        # training-free: spatial is best on val but worst on test; topk ties with random on val
        _run(record, "sparse-free", f"s{seed}", seed, "spatial", 0.11, 0.40 + jitter, 0.55 + jitter, 28)
        _run(record, "sparse-free", f"r{seed}", seed, "random", 0.11, 0.50 + jitter, 0.45 + jitter, 28)
        _run(record, "sparse-free", f"p{seed}", seed, "prumerge", None, 0.30 + jitter, 0.30 + jitter, 40.5)
        _run(record, "sparse-free", f"k{seed}", seed, "topk", 0.055, 0.30 + 3 * jitter, 0.30 + 3 * jitter, 14)
        _run(record, "sparse-free", f"q{seed}", seed, "random", 0.055, 0.31 + jitter, 0.31 + jitter, 14)
        # the whole finetune trained with pruning: against the unpruned model of the same seed
        _run(record, "sparse-pruned-full", f"f{seed}", seed, "visionzip", 0.11, 0.58 + jitter, 0.6, 28)
        _run(record, "sparse-pruned-full", f"g{seed}", seed, "visionzip", 0.055, 0.50 + jitter, 0.5, 14)
        version = last_version if seed == 2 else "v1"
        _run(record, "sparse-trained", f"t{seed}", seed, "visionzip", 0.11, 0.59 + jitter, 0.60 + jitter, 28,
             version=version, steps=300)  # fmt: skip
        _run(
            record, "sparse-trained", f"v{seed}", seed, "visionzip", 0.055, 0.48, 0.50 + jitter, 14, steps=300
        )
        # the control: the finetune stage retrained as long without pruning
        _run(
            record,
            "sparse-trained",
            f"n{seed}",
            seed,
            "none",
            None,
            0.62 + jitter,
            0.61 + jitter,
            256,
            steps=300,
        )


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
    assert result["sparse-trained"]["reference"] == "control"
    kept = result["sparse-trained"]["rows"][("visionzip", 0.11)]["kept"]
    assert kept.mean == pytest.approx(0.59 / 0.62, abs=2e-3) and kept.n == 3
    control = result["sparse-trained"]["rows"][("none", 1.0)]["kept"]  # against the unpruned model
    assert control.mean == pytest.approx(0.62 / 0.60, abs=2e-3) and control.n == 3
    free_kept = result["sparse-free"]["rows"][("random", 0.11)]["kept"]  # training-free: the unpruned model
    assert free_kept.mean == pytest.approx(0.50 / 0.60, abs=2e-3)
    targets = result["targets"]["sparse-trained"]
    assert targets[0.11]["met"] is True  # 95.2% ≥ 95%
    assert targets[0.055]["met"] is False  # 77% < 90%
    # the whole finetune with pruning: kept of the same seed's unpruned model (same schedule)
    full = result["targets"]["sparse-pruned-full"]
    assert full[0.11]["kept"].mean == pytest.approx(0.58 / 0.60, abs=2e-3) and full[0.11]["met"] is True
    assert full[0.055]["kept"].mean == pytest.approx(0.50 / 0.60, abs=2e-3) and full[0.055]["met"] is False
    assert result["sparse-pruned-full"]["best"][0.11]["separated"] is None  # the only method trained
    assert result["doubling"]["converged"] is None  # no twice-as-long run
    against = result["sparse-pruned-full"]["rows"][("visionzip", 0.11)]["against"]
    assert set(against) == {"unpruned"} and against["unpruned"]["separated"] is True  # −0.02 > 2 SE 0.016
    assert against["unpruned"]["difference"] == pytest.approx(-0.02)
    text = summarize.markdown(result)
    assert "| spatial **best** | 11.0% | 3 |" in text
    assert "5.5%: random has the best val mean but ties with topk" in text
    assert "**not met**" in text
    assert "| visionzip, 11.0% | 0.580 ± 0.010 |" in text  # the whole-finetune arm by category
    assert "visionzip at 11.0% against the unpruned model (test): -0.020, beyond 2 SE" in text


def test_a_still_rising_val_curve_is_not_converged(summarize, tmp_path):
    _world(tmp_path, rising=True)
    convergence = summarize.summarize(summarize.load(tmp_path))["unpruned"]["convergence"]
    assert convergence["converged"] is False and "still rising" in convergence["why"]


@pytest.mark.parametrize(("longer", "converged"), [(0.62, True), (0.70, False)])
def test_a_schedule_twice_as_long_decides_convergence(summarize, tmp_path, longer, converged):
    _world(tmp_path, longer=longer)  # the short schedule's val: 0.61 ± 0.01; 0.62 is within 2 SE, 0.70 not
    result = summarize.summarize(summarize.load(tmp_path))
    assert result["doubling"]["converged"] is converged
    assert result["doubling"]["steps"] == [[1500], [3000]]
    assert result["targets"]["sparse-pruned-full"][0.11]["of_long"].mean == pytest.approx(
        0.58 / 0.64, abs=2e-3
    )
    assert result["targets"]["sparse-pruned-full"][0.11]["met_long"] is False  # 90.6% < 95%
    assert result["long"]["convergence"]["converged"] is None  # the fake long runs log no val checks
    text = summarize.markdown(result)
    assert "Unpruned, finetune twice as long" in text and "of the twice-as-long model" in text
    assert f"Converged (a schedule twice as long does not raise val beyond 2 SE): {converged}" in text
    assert "of the twice-as-long model's: **not met**" in text


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
