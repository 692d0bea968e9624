"""experiments/pruning/summarize.py: the best training-free method per budget is chosen on val, never
test, and called a tie unless separated beyond 2 SE."""

from __future__ import annotations

import json

import pytest

from tests.experiments import fake_run, load_script


@pytest.fixture(scope="module")
def summarize():
    return load_script("pruning/summarize.py", "pruning_summarize")


def _run(part, name, seed, method, ratio, test, val, tokens):
    ratio_text = "null" if ratio is None else ratio
    config = f"seed: {seed}\npruning:\n  ratio: {ratio_text}\nchoices:\n  pruning: {method}\n"
    fake_run(part / name, config, test, val, tokens)


def test_best_is_chosen_on_val_and_ties_are_named(summarize, tmp_path, monkeypatch):
    free = tmp_path / "runs" / "pruning-free"
    for seed, j in enumerate((0.0, 0.01, -0.01)):
        _run(free, f"none{seed}", seed, "none", None, 0.70 + j, 0.70 + j, 256)
        # 11%: spatial best on val, worst on test; 5.5%: random and tome tie on val
        _run(free, f"s{seed}", seed, "spatial", 0.11, 0.40 + j, 0.60 + j, 28)
        _run(free, f"r{seed}", seed, "random", 0.11, 0.50 + j, 0.45 + j, 28)
        _run(free, f"r5{seed}", seed, "random", 0.055, 0.30 + j, 0.31 + j, 14)
        _run(free, f"t5{seed}", seed, "tome", 0.055, 0.30 + 3 * j, 0.30 + 3 * j, 14)
        _run(free, f"p{seed}", seed, "prumerge", None, 0.2, 0.2, 128)
        _run(free, f"pp{seed}", seed, "prumerge_plus", None, 0.2, 0.2, 128)
    monkeypatch.setattr("sys.argv", ["summarize.py", str(tmp_path / "runs"), str(tmp_path / "out")])
    summarize.main()
    text = (tmp_path / "out" / "result.md").read_text()
    assert "- 11.0%: **spatial**, val 0.600 ± 0.010 (n=3), test 0.400" in text
    assert "- 5.5%: random (tie with tome), val 0.310 ± 0.010 (n=3)" in text
    stored = json.loads((tmp_path / "out" / "result.json").read_text())
    assert {e["method"] for e in stored["training_free"]} >= {"spatial", "random", "tome", "none"}
