"""Intervals behind the curves and the verdict, checked by hand."""

import math

import pytest

from core.stats import interval, mean_ci, t95, t_critical, t_two_sided_p, wilson


def test_t_interval_across_three_seeds_by_hand():
    mean, low, high = mean_ci([0.5, 0.6, 0.7])
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, 2 dof)
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


def test_t_critical_value_is_the_exact_quantile_and_falls_with_the_degrees_of_freedom():
    known = {1: 12.7062, 2: 4.3027, 7: 2.3646, 30: 2.0423, 31: 2.0395, 40: 2.0211, 60: 2.0003, 100: 1.9840, 1000: 1.9623}
    for df, value in known.items():
        assert t95(df) == pytest.approx(value, abs=1e-4), df
    values = [t95(df) for df in range(1, 301)]
    assert all(a > b for a, b in zip(values, values[1:]))  # no step down to 1.96 after 30 dof
    assert values[-1] > 1.959964  # still above the normal quantile
    assert t_critical(2, 0.90) == pytest.approx(2.919986, abs=1e-6) and t_critical(10, 0.99) == pytest.approx(3.169273, abs=1e-6)
    # 1 dof is the Cauchy distribution: P(|T| ≥ t) = 1 − 2·atan(t)/π
    for t in (0.3, 1.0, 6.0):
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, abs=1e-12)
    half = t95(39) * 1.0 / math.sqrt(40)  # 40 seeds: the interval uses t(39) = 2.0227, not 1.96
    assert mean_ci([float(k % 2) for k in range(40)])[2] - 0.5 == pytest.approx(half * math.sqrt(40 / 39) * 0.5, rel=1e-9)
