"""experiments/ac/refit.py: every form refitted from a recorded ac.json, the better one chosen, the recorded
quadratic reproduced (or the script says it is not)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.experiments import load_script


@pytest.fixture(scope="module")
def refit_script():
    return load_script("ac/refit.py", "ac_refit")


def _recorded(quadratic_loo: float | None = None) -> dict:
    rng = np.random.default_rng(4)
    a, c = rng.uniform(0, 1, 14), rng.uniform(0, 1, 14)
    score = 0.3 + 0.5 * a + 0.4 * c + rng.normal(0, 0.08, 14)  # a noisy linear law
    candidates = [{"a": x, "c": y, "score": s} for x, y, s in zip(a, c, score, strict=True)]
    candidates.append({"a": 0.5, "c": 0.5, "score": None})  # untrained: left out of the fits
    return {"candidates": candidates, "fit": {"AC": {"loo_r2": quadratic_loo}} if quadratic_loo else None}


def test_refit_chooses_the_form_that_predicts_held_out_candidates(refit_script):
    result = refit_script.refit(_recorded(), trials=50)
    assert result["candidates"] == 14 and len(result["fits"]) == 6
    assert result["chosen"] == "linear"
    assert result["fits"]["AC linear"]["loo_r2"] > result["fits"]["AC quadratic"]["loo_r2"]
    assert set(result["policy"]) == {"linear", "quadratic"} and result["reproduced"]
    text = refit_script.markdown(result)
    assert "Chosen: **linear**" in text and text.count("| AC ") == 2


def test_refit_says_when_the_recorded_quadratic_does_not_reproduce(refit_script, tmp_path, monkeypatch):
    recorded = _recorded()
    recorded["fit"] = {
        "AC": {"loo_r2": refit_script.refit(recorded, trials=5)["fits"]["AC quadratic"]["loo_r2"]}
    }
    assert refit_script.refit(recorded, trials=5)["reproduced"]
    recorded["fit"]["AC"]["loo_r2"] += 0.01
    path = tmp_path / "ac.json"
    path.write_text(json.dumps(recorded))
    monkeypatch.setattr(sys, "argv", ["refit.py", str(path)])
    with pytest.raises(SystemExit, match="does not reproduce"):
        refit_script.main()
    assert "reproduces the recorded" in (tmp_path / "refit.md").read_text()
