"""The rules every comparison follows: a configuration's score is its mean ± std over seeds with n, and a
difference is called real only when both sides have at least three seeds and it exceeds two standard
errors of the difference (Welch's, sqrt(s₁²/n₁ + s₂²/n₂)); otherwise the two are a tie."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

MIN_SEEDS = 3


@dataclass(frozen=True)
class Estimate:
    """Mean, sample standard deviation (0 for one value) and count of one configuration's seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Estimate | None:
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        return cls(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"


def two_standard_errors(a: Estimate, b: Estimate) -> float:
    """Twice the standard error of a.mean − b.mean (inf when either side has a single seed)."""
    if a.n < 2 or b.n < 2:
        return math.inf
    return 2 * math.sqrt(a.std**2 / a.n + b.std**2 / b.n)


def separated(a: Estimate, b: Estimate) -> bool:
    """Whether a and b differ by more than the noise, with enough seeds on both sides to say so."""
    return min(a.n, b.n) >= MIN_SEEDS and abs(a.mean - b.mean) > two_standard_errors(a, b)


def why_tied(a: Estimate, b: Estimate) -> str:
    """Why a and b are not called different, in a few words."""
    if min(a.n, b.n) < MIN_SEEDS:
        return f"{min(a.n, b.n)} seed(s) on one side, fewer than {MIN_SEEDS}"
    return f"difference {abs(a.mean - b.mean):.3f} ≤ 2 SE {two_standard_errors(a, b):.3f}"
