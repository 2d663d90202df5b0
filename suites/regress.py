"""`hindsight regress`: did the candidate lose anything against the reference, metric by metric?

For every metric both results hold: delta = candidate − reference, with its standard error. When both hold per-item
scores for the same items, the items are paired (the standard error of the per-item differences, which removes the
items' shared difficulty); otherwise the two are independent: √(se_b² + se_c²). A metric has **regressed** when it
got worse by at least ``min_effect`` and the change is significant at ``confidence`` (|delta| > t·se with n − 1 degrees
of freedom when paired over n items; z·se, the normal approximation, otherwise); **improved** likewise the other way;
otherwise **unchanged**. Without a standard error nothing can
be significant, so such a metric is unchanged (the report says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.stats import delta_se, t_critical, two_sided_p, z_critical
from suites.results import EvalResult, MetricResult

Verdict = Literal["regressed", "improved", "unchanged"]


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry: str
    metric: str
    reference: float
    candidate: float
    delta: float = Field(description="candidate − reference")
    se: float | None = Field(description="standard error of delta")
    paired: bool = Field(description="se from per-item differences on the same items")
    n: int | None
    p: float | None = Field(description="two-sided p-value of delta ≠ 0 (Student t with n − 1 dof when paired, else normal approximation)")
    verdict: Verdict
    higher_is_better: bool


class Regression(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: str
    candidate: str
    suite: str
    confidence: float
    min_effect: float
    comparisons: list[Comparison]

    @property
    def regressed(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict == "regressed"]


def compare_metric(entry: str, name: str, base: MetricResult, cand: MetricResult, confidence: float, min_effect: float) -> Comparison:
    """One metric's delta, standard error and verdict."""
    paired = bool(base.items and cand.items and base.scores is not None and cand.scores is not None and sorted(base.items) == sorted(cand.items)
                  and len(set(base.items)) == len(base.items))
    delta = cand.value - base.value
    if paired:
        order = {item: k for k, item in enumerate(cand.items or [])}
        cand_scores = [cand.scores[order[item]] for item in base.items or []]  # type: ignore[index]
        se = delta_se(None, None, paired=(base.scores or [], cand_scores))
    else:
        se = delta_se(base.stderr, cand.stderr)
    n = len(base.items or []) if paired else cand.n
    df = n - 1 if paired and n and n > 1 else None  # paired differences: Student t with n − 1 degrees of freedom
    better = delta if base.higher_is_better else -delta
    critical = t_critical(df, confidence) if df is not None else z_critical(confidence)
    significant = se is not None and abs(delta) > critical * se
    verdict: Verdict = "unchanged"
    if significant and abs(delta) >= min_effect:
        verdict = "improved" if better > 0 else "regressed"
    return Comparison(entry=entry, metric=name, reference=base.value, candidate=cand.value, delta=delta, se=se, paired=paired,
                      n=n, p=two_sided_p(delta, se, df), verdict=verdict, higher_is_better=base.higher_is_better)


def regress(reference: EvalResult, candidate: EvalResult, confidence: float = 0.95, min_effect: float = 0.0) -> Regression:
    """Every metric present in both results, in the reference's order."""
    rows = []
    for entry in reference.entries:
        for name, base in entry.metrics.items():
            cand = candidate.metric(entry.name, name)
            if cand is not None and not math.isnan(base.value) and not math.isnan(cand.value):  # NaN: nothing was scored
                rows.append(compare_metric(entry.name, name, base, cand, confidence, min_effect))
    return Regression(reference=reference.model, candidate=candidate.model, suite=reference.suite, confidence=confidence, min_effect=min_effect, comparisons=rows)


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


COLUMNS = ("entry", "metric", "reference", "candidate", "delta ± se", "p", "verdict")


def cells(c: Comparison) -> list[str]:
    se = f" ± {fmt(c.se)}" + (" (paired)" if c.paired else "") if c.se is not None else " (no se)"
    return [c.entry, c.metric, fmt(c.reference), fmt(c.candidate), f"{c.delta:+.3f}{se}", fmt(c.p), c.verdict]


def markdown(report: Regression, commands: Sequence[str] = ()) -> str:
    lines = [f"# Regression check: {report.candidate} against {report.reference}", "",
             (f"Suite `{report.suite}`; a metric regressed when it got worse by at least {report.min_effect:g} and the change is significant at "
              f"{report.confidence:.0%} confidence (two-sided; where both runs scored the same items, paired per item with Student t, "
              "else the normal approximation)."), ""]
    lines += [f"    {c}" for c in commands] + ([""] if commands else [])
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(c)) + " |" for c in report.comparisons]
    worse = report.regressed
    lines += ["", f"**{len(worse)} regressed**" + (": " + ", ".join(f"{c.entry}/{c.metric}" for c in worse) if worse else "")
              + f", {sum(c.verdict == 'improved' for c in report.comparisons)} improved, {sum(c.verdict == 'unchanged' for c in report.comparisons)} unchanged."]
    return "\n".join(lines) + "\n"
