"""Intervals for curves: t-intervals across seeds, Wilson intervals for shares over prompts."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below this point: use the symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 100_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom (exact: I_{df/(df+t²)}(df/2, 1/2))."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


@functools.lru_cache(maxsize=256)
def t_critical(df: float, confidence: float = 0.95) -> float:
    """Two-sided Student-t quantile: |T| exceeds it with probability 1 − ``confidence`` (2.0395 for 31 dof at 0.95)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    alpha = 1 - confidence
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > alpha:
        low, high = high, high * 2
    for _ in range(200):  # bisection to full double precision
        mid = (low + high) / 2
        if mid in (low, high):
            break
        low, high = (mid, high) if t_two_sided_p(mid, df) > alpha else (low, mid)
    return (low + high) / 2


def t95(df: int) -> float:
    """The two-sided 95% Student-t quantile for ``df`` degrees of freedom."""
    return t_critical(df, 0.95)


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval across seeds (a zero-width interval for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def wilson(share: float, n: int) -> tuple[float, float, float]:
    """Share and its 95% Wilson interval over ``n`` trials."""
    if n == 0:
        return share, 0.0, 1.0
    z = 1.96
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return share, max(0.0, centre - half), min(1.0, centre + half)


def interval(values: Sequence[float], n_items: int, proportion: bool) -> tuple[float, float, float]:
    """Across seeds when there are several; else, for a share, over the ``n_items`` prompts.

    A share over several seeds gets the union of the t-interval across seeds and the Wilson interval of the
    pooled count (seeds × prompts), clipped to [0, 1]: seeds that agree (all 0/32) do not make it certain.
    """
    if len(values) == 1 and proportion:
        return wilson(values[0], n_items)
    mean, low, high = mean_ci(values)
    if not proportion:
        return mean, low, high
    _, pooled_low, pooled_high = wilson(mean, n_items * len(values))
    return mean, max(0.0, min(low, pooled_low)), min(1.0, max(high, pooled_high))


def bootstrap_ci(scores: Sequence[float | None], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean score, resampling items (prompts) with replacement.

    ``None`` items (e.g. invalid verdicts) are resampled like the others but left out of each resample's mean;
    None when no item has a score.
    """
    import numpy as np

    values = np.array([np.nan if s is None else s for s in scores], dtype=float)
    if not np.any(~np.isnan(values)):
        return None
    sample = values[np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))]
    valid = ~np.isnan(sample)
    counts = valid.sum(axis=1)
    means = np.where(valid, sample, 0.0).sum(axis=1)[counts > 0] / counts[counts > 0]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mean_se(scores: Sequence[float]) -> tuple[float, float | None]:
    """Mean of per-item scores and its standard error, sd (n − 1) / √n; None for fewer than two items."""
    n = len(scores)
    mean = sum(scores) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n)


def delta_se(se_a: float | None, se_b: float | None, paired: tuple[Sequence[float], Sequence[float]] | None = None) -> float | None:
    """Standard error of mean(b) − mean(a).

    With ``paired`` (both checkpoints' per-item scores on the same items, in the same order): the standard error of the
    per-item differences, which removes the items' shared difficulty. Otherwise the two means are taken as independent:
    √(se_a² + se_b²); None when either is unknown.
    """
    if paired is not None:
        a, b = paired
        if len(a) != len(b):
            raise ValueError("paired scores differ in length")
        return mean_se([y - x for x, y in zip(a, b)])[1]
    if se_a is None or se_b is None:
        return None
    return math.sqrt(se_a**2 + se_b**2)


def z_critical(confidence: float) -> float:
    """Two-sided normal quantile: 1.96 for 0.95."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def two_sided_p(delta: float, se: float | None, df: float | None = None) -> float | None:
    """p-value of delta ≠ 0: Student t with ``df`` degrees of freedom, else the normal approximation (0 when se is 0 and
    delta is not; None without se)."""
    from statistics import NormalDist

    if se is None:
        return None
    if se == 0:
        return 1.0 if delta == 0 else 0.0
    if df is not None:
        return t_two_sided_p(delta / se, df)
    return 2 * (1 - NormalDist().cdf(abs(delta) / se))
