"""Reports of runs whose user changes: how fast a flip is followed (``flip.md`` section, ``flip.png``) and how well
earlier preferences are retained as later ones arrive in a continual run (``retention.png``).

Flip: the lag is the number of interactions after the flip until the new preference's score (clean compliance, or the
win rate judged for its persona) exceeds the old one's at an evaluation, on the mean over seeds and per seed; 0 when it
already did at the flip. The control arm's user never flips, so its lag is what the hindsight prompt and the untrained
model's own leaning give without any learning from the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.records import EvalRecord, InteractionRecord, read_jsonl
from core.stats import mean_ci
from harness.config import RunConfig
from harness.curves import COLOURS, TRAINED, Point, by_preference, curves, fmt

LAG_FIELDS = (("clean", "clean compliance"), ("win_rate", "win rate vs initial"))


@dataclass
class Lag:
    """How long one arm took to follow a flip on one metric."""

    field: str
    arm: str
    lag: int | None  # interactions after the flip until new > old on the mean over seeds; None: not within ``horizon``
    horizon: int  # interactions evaluated after the flip
    seeds: list[int | None]  # the same lag per seed
    x: int  # the evaluation the points below come from: the crossing, or the last one
    old: Point
    new: Point
    holds: bool  # new stays above old at every later evaluation
    degenerate: Point | None
    relevant: Point | None

    def describe(self) -> str:
        if self.lag is None:
            return f"not within {self.horizon}"
        return "0 (already above at the flip)" if self.lag == 0 else str(self.lag)


def _crossing(old: list[Point], new: list[Point], flip_at: int) -> tuple[int | None, int, bool]:
    """(first x ≥ flip_at where new > old, or None; the last x evaluated; whether new stays above from there on)."""
    olds, news = {p.interactions: p.mean for p in old}, {p.interactions: p.mean for p in new}
    xs = sorted(x for x in olds.keys() & news.keys() if x >= flip_at)
    above = [x for x in xs if news[x] > olds[x]]
    if not above:
        return None, xs[-1] if xs else flip_at, False
    first = above[0]
    return first, xs[-1], all(x in above for x in xs if x >= first)


def flip_lags(evals: list[EvalRecord], flip_at: int) -> list[Lag]:
    """Per metric and trained arm, the lag to follow the flip (records scored for the old preference come first)."""
    groups = by_preference(evals)
    if len(groups) != 2:
        return []
    (_, old_records), (_, new_records) = groups
    lags = []
    for field, _ in LAG_FIELDS:
        olds, news = curves(old_records, field, True), curves(new_records, field, True)
        degenerate, relevant = curves(old_records, "degenerate", True), curves(old_records, "relevant", True)
        for arm in TRAINED:
            if arm not in olds or arm not in news:
                continue
            first, last, holds = _crossing(olds[arm], news[arm], flip_at)
            x = first if first is not None else last
            seeds = []
            for seed in sorted({r.seed for r in old_records if r.arm == arm}):
                o = curves([r for r in old_records if r.seed == seed], field, True).get(arm, [])
                n = curves([r for r in new_records if r.seed == seed], field, True).get(arm, [])
                crossed = _crossing(o, n, flip_at)[0]
                seeds.append(None if crossed is None else crossed - flip_at)
            lags.append(Lag(field, arm, None if first is None else first - flip_at, last - flip_at, seeds, x,
                            _at(olds[arm], x), _at(news[arm], x), holds, _at(degenerate.get(arm, []), x), _at(relevant.get(arm, []), x)))
    return lags


def _at(series: list[Point], x: int) -> Point | None:
    return next((p for p in series if p.interactions == x), None)


def flip_lines(lags: list[Lag], old: str, new: str) -> list[str]:
    """The flip table (markdown)."""
    if not lags:
        return ["(no evaluation after the flip with both preferences scored)"]
    lines = [f"| metric | arm | interactions after the flip until {new} > {old} | per seed | at | {old} | {new} | stays above | degenerate | relevant |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for lag in lags:
        label = dict(LAG_FIELDS)[lag.field]
        per_seed = ", ".join("–" if s is None else str(s) for s in lag.seeds)
        cells = [fmt(p, True) if p else "–" for p in (lag.old, lag.new, lag.degenerate, lag.relevant)]
        lines.append(f"| {label} | {lag.arm} | {lag.describe()} | {per_seed} | {lag.x} | {cells[0]} | {cells[1]} | "
                     f"{'yes' if lag.holds else 'no'} | {cells[2]} | {cells[3]} |")
    return lines


def plot_flip(run_dir: Path, evals: list[EvalRecord], flip_at: int, title: str) -> Path | None:
    """flip.png: the new preference's score minus the old one's over interactions, per trained arm (a 95% band across
    seeds when there are several); the flip is followed where a curve crosses zero."""
    groups = by_preference(evals)
    if len(groups) != 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (old, old_records), (new, new_records) = groups
    fig, axes = plt.subplots(1, len(LAG_FIELDS), figsize=(12, 4.2), constrained_layout=True)
    for ax, (field, label) in zip(axes, LAG_FIELDS):
        for arm in TRAINED:
            xs, means, lows, highs = _gap(old_records, new_records, field, arm)
            if not xs:
                continue
            ax.plot(xs, means, marker="o", color=COLOURS[arm], linestyle="-" if arm != "control" else "-.", label=arm)
            ax.fill_between(xs, lows, highs, color=COLOURS[arm], alpha=0.15)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axvline(flip_at, color="black", linestyle="--", linewidth=1, alpha=0.6)
        ax.set_title(f"{label}: {new} − {old}")
        ax.set_xlabel("interactions")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    path = run_dir / "flip.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _gap(old_records: list[EvalRecord], new_records: list[EvalRecord], field: str, arm: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """new − old per evaluation of ``arm``: the mean across seeds and its 95% t-interval (zero width for one seed)."""
    def values(records: list[EvalRecord]) -> dict[tuple[int, int], float]:
        return {(r.interactions, r.seed): getattr(r, field) for r in records if r.arm == arm and getattr(r, field) is not None}

    old, new = values(old_records), values(new_records)
    xs = sorted({x for x, _ in old.keys() & new.keys()})
    stats = [mean_ci([new[k] - old[k] for k in sorted(old.keys() & new.keys()) if k[0] == x]) for x in xs]
    return xs, [s[0] for s in stats], [max(s[1], -1.0) for s in stats], [min(s[2], 1.0) for s in stats]  # a gap of shares lies in [−1, 1]


def signal_lines(records: list[InteractionRecord], block: int) -> list[str]:
    """What the training saw, per block of interactions and trained arm (all seeds pooled): the user's profile, the share of
    satisfied follow-ups, of answers ending on end-of-turn (an answer cut at the token budget never shows a finished long
    answer), the mean answer length, the mean per-token advantage and the mean end-of-turn advantage of the answers that
    ended (negative: the follow-up lowered the probability of stopping there)."""
    def mean(values: list[float]) -> str:
        return f"{sum(values) / len(values):+.3f}" if values else "–"

    lines = ["| interactions | user | arm | satisfied | ended | answer tokens | advantage | end-of-turn advantage |", "|---|---|---|---|---|---|---|---|"]
    for start in range(0, max((r.index for r in records), default=-1) + 1, block):
        for arm in TRAINED:
            rows = [r for r in records if r.arm == arm and start <= r.index < start + block and r.failed is None]
            if not rows:
                continue
            judged = [r.satisfied for r in rows if r.satisfied is not None]
            satisfied = f"{sum(judged) / len(judged):.2f}" if judged else "–"
            users = "neutral messages" if arm == "control" else ", ".join(dict.fromkeys(r.profile or "–" for r in rows))
            lines.append(f"| {start}–{start + block} | {users} | {arm} | {satisfied} | {sum(r.finished for r in rows) / len(rows):.2f} | "
                         f"{sum(r.response_tokens for r in rows) / len(rows):.0f} | {mean([r.advantage['mean'] for r in rows if 'mean' in r.advantage])} | "
                         f"{mean([r.advantage['eos'] for r in rows if 'eos' in r.advantage])} |")
    return lines


# ----- continual ---------------------------------------------------------------------------------------
@dataclass
class Retention:
    """One preference's clean compliance for one arm at the end of every stage of a continual run."""

    preference: str
    own: int  # its stage (0-based): it is added at own·stage
    arm: str
    ends: list[Point | None]  # at the last evaluation at or before each stage's end
    change: float | None  # at the run's last stage end minus at the end of its own stage (negative: forgotten)


def stage_ends(stage: int, preferences: int, total: int) -> list[int]:
    """The last interaction of each stage: k·stage for the first ones, the run's length for the last."""
    return [stage * (k + 1) for k in range(preferences - 1)] + [total]


def retention(evals: list[EvalRecord], stage: int, total: int, field: str = "clean") -> list[Retention]:
    """Per preference (in the order added) and trained arm, ``field`` at each stage's end and the change since its own stage."""
    groups = by_preference(evals)
    ends = stage_ends(stage, len(groups), total)
    rows = []
    for k, (name, records) in enumerate(groups):
        for arm, series in curves(records, field, True).items():
            if arm not in TRAINED:
                continue
            points = [_last_until(series, end) for end in ends]
            own, final = points[k], points[-1]
            change = final.mean - own.mean if own is not None and final is not None else None
            rows.append(Retention(name or "", k, arm, points, change))
    return rows


def _last_until(series: Sequence[Point], x: int) -> Point | None:
    before = [p for p in series if p.interactions <= x]
    return before[-1] if before else None


def retention_lines(evals: list[EvalRecord], stage: int, total: int) -> list[str]:
    """The retention table (markdown): clean compliance of each preference at each stage's end (in bold: the end of the
    stage it was added in), treated beside control, then the arms' degenerate and relevant shares at the same points
    (they do not depend on the preference)."""
    groups = by_preference(evals)
    ends = stage_ends(stage, len(groups), total)
    head = " | ".join(f"end of stage {k + 1} ({x})" for k, x in enumerate(ends))
    lines = [f"| preference (added at) | arm | {head} | change since its own stage |", "|---|---|" + "---|" * (len(ends) + 1)]
    for row in retention(evals, stage, total):
        cells = " | ".join(("–" if p is None else f"**{fmt(p, True)}**" if k == row.own else fmt(p, True)) for k, p in enumerate(row.ends))
        change = "–" if row.change is None else f"{row.change:+.2f}"
        lines.append(f"| {row.preference} ({row.own * stage}) | {row.arm} | {cells} | {change} |")
    for field in ("degenerate", "relevant"):
        for arm, series in curves(groups[0][1], field, True).items():
            if arm in TRAINED:
                cells = " | ".join(fmt(p, True) if p else "–" for p in (_last_until(series, x) for x in ends))
                lines.append(f"| *{field}* | {arm} | {cells} | |")
    return lines


def plot_retention(run_dir: Path, evals: list[EvalRecord], stage: int, total: int, title: str) -> Path:
    """retention.png: one panel per preference, its clean compliance for each trained arm over interactions (the span
    before it was added greyed), and one panel of the arms' degenerate share; dashed lines at the stage boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_preference(evals)
    panels = [(f"{name}: clean compliance (added at {k * stage})", records, "clean", k * stage) for k, (name, records) in enumerate(groups)]
    panels.append(("degenerate", groups[0][1], "degenerate", 0))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), constrained_layout=True, squeeze=False)
    for ax, (label, records, field, added) in zip(axes[0], panels):
        for arm, series in curves(records, field, True).items():
            if arm not in TRAINED:
                continue
            xs = [p.interactions for p in series]
            ax.plot(xs, [p.mean for p in series], marker="o", color=COLOURS[arm], linestyle="-" if arm != "control" else "-.", label=arm)
            ax.fill_between(xs, [p.low for p in series], [p.high for p in series], color=COLOURS[arm], alpha=0.15)
        if added:
            ax.axvspan(0, added, color="grey", alpha=0.12)
        for x in stage_ends(stage, len(groups), total)[:-1]:
            ax.axvline(x, color="black", linestyle="--", linewidth=1, alpha=0.6)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("interactions")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    path = run_dir / "retention.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----- the report's and `show`'s section -------------------------------------------------------------------
def section(evals: list[EvalRecord], flip_at: int | None, stage: int | None, total: int) -> list[str]:
    """The markdown section of a flip run (lags) or a continual run (retention); empty for any other run."""
    groups = by_preference(evals)
    if flip_at is not None and len(groups) == 2:
        (old, _), (new, _) = groups
        return ["## Following the flip", "",
                f"Interactions after the flip (at {flip_at}) until the score for **{new}** exceeds the score for **{old}** at an evaluation "
                "(mean over seeds; per seed beside it), with both scores, the arm's degenerate and relevant shares at that evaluation (or at "
                "the last one), and whether it stays above. The control arm's user never flips: its lag is the drift without learning.",
                "", *flip_lines(flip_lags(evals, flip_at), old or "", new or "")]
    if stage is not None and len(groups) > 1:
        return ["## Retention of earlier preferences", "",
                "Clean compliance of each preference at the end of every stage (bold: the end of the stage that added it), treated beside "
                "control; the last column is the change from its own stage's end to the run's end (negative: forgotten).",
                "", *retention_lines(evals, stage, total)]
    return []


def report_section(run_dir: Path, config: RunConfig, evals: list[EvalRecord], title: str) -> list[str]:
    """``section`` for summary.md, with its figure (flip.png or retention.png) drawn."""
    stage = config.continual.stage if config.continual is not None else None
    lines = section(evals, config.flip_at, stage, config.interactions)
    if not lines:
        return []
    if config.flip_at is not None:
        figure = plot_flip(run_dir, evals, config.flip_at, title)
        interactions = list(read_jsonl(run_dir / "interactions.jsonl", InteractionRecord))
        if interactions:
            lines += ["", "### What the training saw", "", *signal_lines(interactions, config.eval.every)]
    else:
        figure = plot_retention(run_dir, evals, stage or config.interactions, config.interactions, title)
    return ["", *lines, "", f"![{figure.stem}]({figure.name})"] if figure else ["", *lines]
