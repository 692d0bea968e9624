"""Learning-rate schedules: each shape, checked at the points that define it."""

from __future__ import annotations

import math

import pytest

from mmcompress.errors import ConfigError
from mmcompress.training.schedules import lr_factor


def test_cosine_warms_up_then_decays_to_zero():
    f = lr_factor("cosine", steps=100, warmup_ratio=0.1)
    assert f(0) == pytest.approx(0.1 * (0.5 * (1 + 1)))  # first step: 1/10 of the warm-up
    assert f(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.09)))  # warm-up done at step 9
    assert f(50) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0)


def test_wsd_holds_the_peak_then_decays_linearly():
    f = lr_factor("wsd", steps=100, warmup_ratio=0.1, decay_ratio=0.2)
    assert f(4) == pytest.approx(0.5)
    assert [f(s) for s in (10, 50, 80)] == [1.0, 1.0, 1.0]
    assert f(90) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0)


def test_constant_holds_the_peak():
    f = lr_factor("constant", steps=100, warmup_ratio=0.05)
    assert f(1) == pytest.approx(0.4)
    assert f(99) == 1.0


def test_unknown_schedule_names_the_options():
    with pytest.raises(ConfigError, match=r"optim\.schedule=.linear. is not one of cosine, wsd, constant"):
        lr_factor("linear", steps=10, warmup_ratio=0.1)
