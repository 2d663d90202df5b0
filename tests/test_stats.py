"""Intervals behind the curves and the verdict, checked by hand."""

import math

import pytest

from core.stats import interval, mean_ci, wilson


def test_t_interval_across_three_seeds_by_hand():
    mean, low, high = mean_ci([0.5, 0.6, 0.7])
    half = 4.303 * 0.1 / math.sqrt(3)
    assert mean == pytest.approx(0.6) and (low, high) == pytest.approx((0.6 - half, 0.6 + half))
    assert mean_ci([0.4]) == (0.4, 0.4, 0.4)


def test_wilson_interval_known_value():
    share, low, high = wilson(0.5, 32)
    assert share == 0.5 and low == pytest.approx(0.336, abs=1e-3) and high == pytest.approx(0.664, abs=1e-3)
    assert wilson(0.0, 32)[1] == 0.0 and wilson(1.0, 32)[2] == 1.0


def test_share_intervals_stay_in_the_unit_interval_but_other_metrics_do_not():
    assert interval([0.0, 0.9], 32, proportion=True)[1:] == (0.0, 1.0)
    low, high = interval([0.0, 0.9], 32, proportion=False)[1:]
    assert low < 0 and high > 1
    assert interval([0.25], 32, proportion=True) == wilson(0.25, 32)


def test_seeds_that_agree_on_a_share_still_get_the_pooled_binomial_interval():
    mean, low, high = interval([0.0, 0.0, 0.0], 32, proportion=True)
    assert mean == 0.0 and low == 0.0 and high == pytest.approx(wilson(0.0, 96)[2]) and high > 0.02
