"""The comparison rules: estimates over seeds, two standard errors, three seeds a side."""

from __future__ import annotations

import math

import pytest

from mmcompress.analysis.significance import Estimate, separated, two_standard_errors, why_tied


def test_estimate_is_mean_sample_std_and_n():
    e = Estimate.of([0.8, None, 0.9, 0.85])
    assert (e.mean, e.n) == (pytest.approx(0.85), 3) and e.std == pytest.approx(0.05)
    assert e.text() == "0.850 ± 0.050 (n=3)"
    assert Estimate.of([0.7]).std == 0.0 and Estimate.of([None]) is None


def test_two_standard_errors_of_a_difference():
    a, b = Estimate(0.85, 0.05, 3), Estimate(0.70, 0.02, 3)
    assert two_standard_errors(a, b) == pytest.approx(2 * math.sqrt(0.05**2 / 3 + 0.02**2 / 3))
    assert two_standard_errors(a, Estimate(0.7, 0.0, 1)) == math.inf


def test_separated_needs_three_seeds_a_side_and_a_gap_beyond_two_standard_errors():
    assert separated(Estimate(0.85, 0.05, 3), Estimate(0.70, 0.02, 3))  # 0.15 > 0.062
    assert not separated(Estimate(0.85, 0.05, 3), Estimate(0.80, 0.05, 3))  # 0.05 ≤ 0.082
    assert not separated(Estimate(0.95, 0.01, 2), Estimate(0.50, 0.01, 2))  # too few seeds
    assert "fewer than 3" in why_tied(Estimate(0.95, 0.01, 2), Estimate(0.50, 0.01, 5))
    assert why_tied(Estimate(0.85, 0.05, 3), Estimate(0.80, 0.05, 3)) == "difference 0.050 ≤ 2 SE 0.082"
