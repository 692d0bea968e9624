"""The law's fit and its policy: a polynomial in min-max normalised (A, C) predicts the benchmark score, and
the AC policy chooses which candidates to finetune so that the best is found after few full trainings
(simulated against random choice once every candidate is trained). The paper fits a quadratic (6 terms);
on a dozen candidates that can overfit, so the linear form (3 terms) is fitted too and the one with the
better leave-one-out R² predicts and drives the policy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FEATURE_SETS = {"AC": ("A", "C"), "A": ("A",), "C": ("C",)}
FORMS = {"linear": 1, "quadratic": 2}  # name → polynomial degree


def minmax(values: Sequence[float]) -> np.ndarray:
    """Values mapped to [0, 1] across candidates (all 0 when they are all equal)."""
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def poly_features(columns: Sequence[np.ndarray], degree: int = 2) -> np.ndarray:
    """Polynomial features: 1, each column and, for degree 2, every product of two ([1, A, C, A², AC, C²])."""
    columns = [np.asarray(c, dtype=np.float64) for c in columns]
    products = [columns[i] * columns[j] for i in range(len(columns)) for j in range(i, len(columns))]
    return np.stack([np.ones_like(columns[0]), *columns, *(products if degree == 2 else [])], 1)


def fit(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients (the minimum-norm solution when there are fewer points than terms)."""
    return np.linalg.lstsq(features, y, rcond=None)[0]


def r2(y: np.ndarray, predicted: np.ndarray) -> float:
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - predicted) ** 2).sum() / total) if total > 0 else math.nan


def loo_predictions(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each point predicted by the fit on all the others."""
    keep = ~np.eye(len(y), dtype=bool)
    return np.array([features[i] @ fit(features[keep[i]], y[keep[i]]) for i in range(len(y))])


def fit_report(a: np.ndarray, c: np.ndarray, y: np.ndarray) -> dict:
    """R² and leave-one-out R² of each form on (A, C), on A alone and on C alone, all min-max normalised;
    keyed "<features> <form>", e.g. "AC linear"."""
    columns = {"A": minmax(a), "C": minmax(c)}
    target = minmax(y)
    out = {}
    for form, degree in FORMS.items():
        for name, used in FEATURE_SETS.items():
            features = poly_features([columns[k] for k in used], degree)
            coefficients = fit(features, target)
            held_out = loo_predictions(features, target) if len(y) > features.shape[1] else None
            out[f"{name} {form}"] = {
                "features": name,
                "form": form,
                "r2": r2(target, features @ coefficients),
                "loo_r2": r2(target, held_out) if held_out is not None else math.nan,
                "loo_predicted": held_out.tolist() if held_out is not None else None,  # normalised units
                "terms": features.shape[1],
            }
    return out


def choose_form(report: dict | None) -> tuple[str, str]:
    """The form whose (A, C) fit predicts held-out candidates best, and why; linear (fewer terms) when
    leave-one-out cannot tell them apart or cannot be computed."""
    scores = {form: (report or {}).get(f"AC {form}", {}).get("loo_r2", math.nan) for form in FORMS}
    if math.isnan(scores["quadratic"]) or not scores["quadratic"] > scores["linear"]:
        if math.isnan(scores["linear"]):
            return "linear", "too few trained candidates for leave-one-out: the form with fewer terms"
        return "linear", (
            f"leave-one-out R² {scores['linear']:.3f} (linear) vs {scores['quadratic']:.3f} (quadratic)"
        )
    return (
        "quadratic",
        f"leave-one-out R² {scores['quadratic']:.3f} (quadratic) vs {scores['linear']:.3f} (linear)",
    )


def policy_trainings(
    a: np.ndarray, c: np.ndarray, y: np.ndarray, rng: np.random.Generator, top: int = 3, degree: int = 2
) -> int:
    """One trial of the AC policy: cover the normalised (A, C) square by 2×2 regions, then 4×4, …, training
    one random candidate of each region not yet covered (regions in random order); after each training
    from the second on, refit on the trained ones and rank all (trained by their score, the rest by the
    prediction). Returns the number of trainings when the true best first enters the top `top`."""
    a, c = minmax(a), minmax(c)
    features = poly_features([a, c], degree)
    best, n = int(np.argmax(y)), len(y)
    trained: list[int] = []
    level = 1
    while len(trained) < n:
        region = regions(a, c, level)
        uncovered = [r for r in rng.permutation(np.unique(region)) if r not in region[trained]]
        if not uncovered and 2**level >= n:  # the rest share regions with trained ones: random order
            uncovered = [None] * (n - len(trained))
        for r in uncovered:
            members = [i for i in range(n) if i not in trained and (r is None or region[i] == r)]
            trained.append(int(rng.choice(members)))
            if len(trained) >= 2 and best in ranked_top(features, y, trained, top):
                return len(trained)
        level += 1
    return n


def regions(a: np.ndarray, c: np.ndarray, level: int) -> np.ndarray:
    """Each candidate's region of the normalised (A, C) square cut into 2^level × 2^level cells."""
    cells = 2**level
    return np.minimum((a * cells).astype(int), cells - 1) * cells + np.minimum(
        (c * cells).astype(int), cells - 1
    )


def ranked_top(features: np.ndarray, y: np.ndarray, trained: list[int], top: int) -> list[int]:
    """The `top` candidates by known score (trained) or predicted score (the rest)."""
    predicted = features @ fit(features[trained], y[trained])
    predicted[trained] = y[trained]
    return list(np.argsort(-predicted)[:top])


def random_trainings(y: np.ndarray, rng: np.random.Generator) -> int:
    """Random choice: trainings in a random order until the best has been trained."""
    return int(np.flatnonzero(rng.permutation(len(y)) == int(np.argmax(y)))[0]) + 1


def simulate(
    a: np.ndarray,
    c: np.ndarray,
    y: np.ndarray,
    trials: int = 1000,
    seed: int = 0,
    top: int = 3,
    degree: int = 2,
) -> dict:
    """The AC policy against random choice over many trials: the chance of finding the best within 3
    trainings (policy: in the predicted top-3; random: trained) and the expected number of trainings."""
    rng = np.random.default_rng(seed)
    policy = np.array([policy_trainings(a, c, y, rng, top, degree) for _ in range(trials)])
    chance = np.array([random_trainings(y, rng) for _ in range(trials)])
    n = len(y)
    return {
        "candidates": n,
        "trials": trials,
        "policy_success_within_3": float((policy <= 3).mean()),
        "policy_expected_trainings": float(policy.mean()),
        "random_success_within_3": float((chance <= 3).mean()),
        "random_success_within_3_exact": min(1.0, 3 / n),
        "random_expected_trainings": float(chance.mean()),
        "random_expected_trainings_exact": (n + 1) / 2,
        "policy_trainings_histogram": np.bincount(policy, minlength=n + 1)[1:].tolist(),
        "definition": f"policy: trainings until the true best is in the predicted top-{top} (refit on the "
        "trained after each, from the second); random: trainings in random order until the best is trained",
    }
