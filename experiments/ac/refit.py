"""Refit the recorded AC experiment with every form `mmcompress ac` fits now, and simulate the AC policy with
each (no training: the recorded A, C and scores of result/ac.json). Checks that the quadratic reproduces the
recorded figures, then writes result/refit.md.

    python experiments/ac/refit.py [result/ac.json]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from mmcompress.analysis.ac.fit import FORMS, choose_form, fit, fit_report, minmax, poly_features, simulate

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-6  # the recorded quadratic fit is deterministic: it must reproduce to rounding


def refit(recorded: dict, trials: int = 1000, seed: int = 0) -> dict:
    """Every form's fit report, the chosen form, each form's policy simulation and the linear coefficients."""
    trained = [c for c in recorded["candidates"] if c["score"] is not None]
    a, c, y = (np.array([x[k] for x in trained]) for k in ("a", "c", "score"))
    report = fit_report(a, c, y)
    form, why = choose_form(report)
    quadratic = report["AC quadratic"]["loo_r2"]
    old = (recorded.get("fit") or {}).get("AC", {}).get("loo_r2")
    reproduced = old is None or math.isclose(quadratic, old, abs_tol=TOLERANCE)
    coefficients = fit(poly_features([minmax(a), minmax(c)], 1), minmax(y))
    return {
        "candidates": len(trained),
        "fits": {k: {"r2": v["r2"], "loo_r2": v["loo_r2"], "terms": v["terms"]} for k, v in report.items()},
        "chosen": form,
        "why": why,
        "policy": {f: simulate(a, c, y, trials, seed, degree=d) for f, d in FORMS.items()},
        "linear_coefficients": dict(zip(("1", "A", "C"), coefficients.tolist(), strict=True)),
        "recorded_quadratic_loo_r2": old,
        "reproduced": reproduced,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# The AC fits on the {result['candidates']} recorded candidates",
        "",
        "| fit | terms | R² (in-sample) | leave-one-out R² |",
        "|---|---|---|---|",
        *(f"| {k} | {v['terms']} | {v['r2']:.3f} | {v['loo_r2']:.3f} |" for k, v in result["fits"].items()),
        "",
        f"Chosen: **{result['chosen']}** ({result['why']}).",
        "Linear AC fit, normalised units: score = "
        + " + ".join(
            f"{v:.2f}·{k}" if k != "1" else f"{v:.2f}" for k, v in result["linear_coefficients"].items()
        ),
        "",
        "| policy with the | best in the top-3 within 3 trainings | expected trainings | random: within 3 | random: expected |",
        "|---|---|---|---|---|",
        *(
            f"| {form} fit | {p['policy_success_within_3']:.3f} | {p['policy_expected_trainings']:.2f} | "
            f"{p['random_success_within_3_exact']:.3f} | {p['random_expected_trainings_exact']:.1f} |"
            for form, p in result["policy"].items()
        ),
        "",
        f"The quadratic's leave-one-out R² reproduces the recorded {result['recorded_quadratic_loo_r2']}: "
        + ("yes" if result["reproduced"] else "NO"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "result" / "ac.json"
    result = refit(json.loads(path.read_text()))
    text = markdown(result)
    (path.parent / "refit.md").write_text(text)
    print(text)
    if not result["reproduced"]:
        sys.exit("the recorded quadratic fit does not reproduce: the fit code changed")


if __name__ == "__main__":
    main()
