"""A run's evaluation records as curves: per arm (and per preference in flip and continual runs), one point per
evaluation with its 95% interval over seeds or prompts. Shared by the report, the red-team report and the CLI tables."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from core.records import METRIC, EvalRecord, TrainRecord, read_jsonl
from core.stats import interval

# (field, label, is a share) in the order they are drawn and tabulated
METRICS = [
    ("win_rate", "win rate vs initial", True),
    ("clean", "clean compliance", True),
    ("compliance", "compliance", True),
    ("degenerate", "degenerate", True),
    ("relevant", "relevant", True),
    ("mean_words", "mean words", False),
    ("kl", "KL to initial", False),
]
COLOURS = {"treated": "#1f77b4", "guarded": "#9467bd", "control": "#ff7f0e", "oracle": "#2ca02c", "initial": "#555555"}
TRAINED = ("treated", "guarded", "control")  # arms that train (guarded: hindsight redteam's arm with the update guard)
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]  # one per preference in flip and continual runs
PREFERENCE_FIELDS = {"win_rate", "clean", "compliance"}  # the metrics that depend on the preference scored


@dataclass
class Point:
    interactions: int
    mean: float
    low: float
    high: float
    seeds: int


def load_evals(run_dir: Path) -> list[EvalRecord]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl", METRIC) if isinstance(r, EvalRecord)]


def load_train(run_dir: Path) -> list[TrainRecord]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl", METRIC) if isinstance(r, TrainRecord)]


def curves(evals: list[EvalRecord], field: str, share: bool) -> dict[str, list[Point]]:
    """Per arm: points over interactions, the untrained evaluation prepended at x = 0 for the trained arms."""
    by_arm: dict[str, dict[int, list[EvalRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in evals:
        if getattr(record, field) is not None:
            by_arm[record.arm][record.interactions].append(record)
    initial = by_arm.get("initial", {}).get(0, [])
    out: dict[str, list[Point]] = {}
    for arm, points in by_arm.items():
        if arm in TRAINED and initial:
            points = {0: initial, **points}
        out[arm] = [_point(x, points[x], field, share) for x in sorted(points)]
    return out


def _point(x: int, records: list[EvalRecord], field: str, share: bool) -> Point:
    """One seed's win rate keeps its bootstrap interval over prompts; several seeds combine like any share (stats.interval),
    over the prompts with a valid verdict."""
    if field == "win_rate":
        if len(records) == 1:
            r = records[0]
            low, high = (r.win_low, r.win_high) if r.win_low is not None and r.win_high is not None else (r.win_rate, r.win_rate)
            return Point(x, r.win_rate, low, high, 1)
        valid = min(round(r.n * (1 - (r.invalid_rate or 0.0))) for r in records)
        return Point(x, *interval([r.win_rate for r in records], valid, True), len(records))
    mean, low, high = interval([getattr(r, field) for r in records], records[0].n, share)
    return Point(x, mean, max(low, 0.0), high, len(records))  # every metric here is non-negative


def by_preference(evals: list[EvalRecord]) -> list[tuple[str | None, list[EvalRecord]]]:
    """Records grouped by the preference they score, in first-seen order: [(None, all)] for a plain run."""
    labels = list(dict.fromkeys(r.profile for r in evals)) or [None]
    return [(label, [r for r in evals if r.profile == label]) for label in labels]


def fmt(point: Point, share: bool) -> str:
    if point.high - point.low < 1e-12:
        return f"{point.mean:.2f}" if share else f"{point.mean:.3g}"
    return f"{point.mean:.2f} [{point.low:.2f}, {point.high:.2f}]" if share else f"{point.mean:.3g} [{point.low:.3g}, {point.high:.3g}]"
