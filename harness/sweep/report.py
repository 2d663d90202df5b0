"""The sweep's report over profiles: summary.md, curve.png (the aggregate curve) and heatmap.png.

- curve.png: win rate vs the untrained model and clean compliance over interactions, averaged over profiles, treated vs
  control vs the in-context oracle, with 95% t-intervals over profiles (one row per method and grid point)
- heatmap.png: profile × interactions, treated minus control clean compliance (mean over seeds)
- summary.md: per profile, sorted by that gain at the last point: the untrained model's compliance (nothing left to learn
  vs did not learn), treated and control clean compliance with 95% intervals, degeneration, relevance and a verdict read off
  the intervals (``Row.verdict``); what the treated arm trained on (harness/sweep/signal.py); what the cells shared; failed cells
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.records import EvalRecord
from core.stats import mean_ci
from harness.curves import COLOURS, Point, curves, fmt
from harness.runs import read_evals
from harness.sweep.signal import signal_lines

ROOM = 0.5  # an untrained model complying with more than half the prompts leaves little to learn
DEGENERATION_SLACK = 0.10  # "within 10 points of the untrained model": the degenerate share a profile may gain while it learns
VERDICTS = ("learned", "control fell", "no effect", "degenerated", "already satisfied", "no control")
JUDGE_NOTE = ("Win rates here come from the judge in the cells' config; the default, `rules`, reads the same checks as the scripted user, so it "
              "is not independent of the training signal. For an independent judge, rerun with an LLM judge "
              "(`hindsight sweep SPEC.yaml --name NAME-llm --set judge.kind=llm --set judge.llm.model=MODEL`) or judge a cell's saved answers: "
              "`hindsight judge A.jsonl B.jsonl --profile P --judge llm --judge-model MODEL` (`hindsight judge --help` shows the jq line "
              "that makes A and B from a run's samples.jsonl).")

SIGNAL_NOTE = ("Per profile, the treated arm's interactions (seeds pooled): the share of follow-ups that complained (not the profile's "
               "satisfied replies), the share of satisfied replies that went to a looping or off-topic answer (a user whose checks nonsense passes "
               "reinforces it), the share of off-topic answers (cosine to the prompt below 0.3) early and late in training, the share of "
               "sampled answers that ended on end-of-turn rather than at the token cap, their length "
               "early and late in training, the advantage A_t (hindsight minus reference log-probability, before centring) averaged over "
               "each answer's tokens and on its end-of-turn token, split by the kind of follow-up, the size of A_t per token (RMS) next to "
               "the control arm's (whose user sends only neutral messages: the noise floor), and how far the arm moved (KL).")


@dataclass
class Row:
    """One profile (and method and grid point) at the last evaluation its cells share, seeds pooled."""

    profile: str
    seeds: int
    x: int
    points: dict[str, dict[str, Point]]  # field → arm → point (initial and oracle at 0, trained arms at x)
    paired: dict[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)  # arm → treated − arm clean compliance, seed by seed: mean, 95% t-interval

    def get(self, field: str, arm: str) -> Point | None:
        return self.points.get(field, {}).get(arm)

    @property
    def effect(self) -> float | None:
        t, c = self.get("clean", "treated"), self.get("clean", "control")
        return t.mean - c.mean if t and c else None

    def degeneration_kept(self) -> bool:
        """The treated arm's degenerate share at most DEGENERATION_SLACK above the untrained model's (means)."""
        d, d0 = self.get("degenerate", "treated"), self.get("degenerate", "initial")
        return d is not None and d0 is not None and d.mean <= d0.mean + DEGENERATION_SLACK + 1e-9

    def above(self, arm: str) -> bool:
        """Treated clean compliance above ``arm``'s: with several seeds, the 95% t-interval of the seed-by-seed differences
        (each seed's treated arm against the same seed's ``arm``) above 0; with one seed, the Wilson intervals apart."""
        if arm in self.paired:
            return self.paired[arm][1] > 0
        t, other = self.get("clean", "treated"), self.get("clean", arm)
        return t is not None and other is not None and t.low > other.high

    @property
    def verdict(self) -> str:
        """Read off the 95% intervals at the last point: degenerated (more degenerate or less relevant answers than the
        untrained model), learned (treated clean compliance above the control's and above the untrained model's), control
        fell (above the control's only: the control arm lost compliance the untrained model had, so the gap is not learning),
        already satisfied (the untrained model complied with more than half the prompts already), else no effect."""
        t, c = self.get("clean", "treated"), self.get("clean", "control")
        d, d0 = self.get("degenerate", "treated"), self.get("degenerate", "initial")
        r, r0 = self.get("relevant", "treated"), self.get("relevant", "initial")
        if d and d0 and d.low > d0.high or r and r0 and r.high < r0.low:
            return "degenerated"
        if t is None or c is None:
            return "no control"
        if self.above("control"):
            return "learned" if self.get("clean", "initial") is None or self.above("initial") else "control fell"
        untrained = self.get("compliance", "initial")
        return "already satisfied" if untrained and untrained.mean > ROOM else "no effect"


def load_cells(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[EvalRecord]]], dict[str, list[str]]]:
    """plan.json, and per variant and profile the evaluation records of its cells (seeds together), and which cells they are."""
    plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    evals: dict[str, dict[str, list[EvalRecord]]] = defaultdict(lambda: defaultdict(list))
    members: dict[str, list[str]] = defaultdict(list)
    for cell in plan["cells"]:
        records = read_evals(folder / "runs" / cell["id"]) if (folder / "runs" / cell["id"] / "config.yaml").is_file() else []
        if any(r.arm == "treated" for r in records):
            evals[cell["variant"]][cell["profile"]] += records
            members[cell["variant"]].append(cell["id"])
    return plan, evals, members


def profile_row(profile: str, records: list[EvalRecord]) -> Row:
    """The last point every seed reached (a cell still running counts only as far as it got)."""
    seeds = {r.seed for r in records if r.arm == "treated"}
    reached = [max(r.interactions for r in records if r.arm == "treated" and r.seed == s) for s in seeds]
    x = min(reached)
    kept = [r for r in records if r.interactions <= x]
    points = {}
    for name in ("clean", "compliance", "degenerate", "relevant", "win_rate", "mean_words"):
        series = curves(kept, name, name != "mean_words")
        points[name] = {arm: next((p for p in s if p.interactions == (0 if arm in ("initial", "oracle") else x)), s[-1]) for arm, s in series.items()}
    paired = {arm: diff for arm in ("control", "initial") if (diff := _paired(kept, x, arm)) is not None}
    return Row(profile, len(seeds), x, points, paired)


def _paired(records: list[EvalRecord], x: int, arm: str) -> tuple[float, float, float] | None:
    """Mean and 95% t-interval of treated − ``arm`` clean compliance over the seeds that have both (None under two)."""
    at = {(r.arm, r.seed): r.clean for r in records if (r.arm, r.interactions) in (("treated", x), (arm, 0 if arm == "initial" else x))}
    seeds = sorted(s for a, s in at if a == "treated" and (arm, s) in at)
    return mean_ci([at["treated", s] - at[arm, s] for s in seeds]) if len(seeds) >= 2 else None


def aggregate(by_profile: dict[str, list[EvalRecord]], field: str) -> dict[str, list[tuple[int, float, float, float, int]]]:
    """Per arm: (interactions, mean over profiles, 95% t-interval over profiles, profiles) at every point, each profile's value
    its mean over seeds; the oracle and the untrained model at 0."""
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for records in by_profile.values():
        for arm, series in curves(records, field, True).items():
            for point in series:
                values[arm][point.interactions].append(point.mean)
    return {arm: [(x, *_clip(*mean_ci(v)), len(v)) for x, v in sorted(xs.items())] for arm, xs in values.items()}


def _clip(mean: float, low: float, high: float) -> tuple[float, float, float]:
    return mean, max(low, 0.0), min(high, 1.0)  # shares


def gains(records: list[EvalRecord]) -> dict[int, float]:
    """Treated minus control clean compliance (means over seeds) at each point past 0."""
    series = curves(records, "clean", True)
    control = {p.interactions: p.mean for p in series.get("control", [])}
    return {p.interactions: p.mean - control[p.interactions] for p in series.get("treated", []) if p.interactions and p.interactions in control}


def plot_curves(path: Path, evals: dict[str, dict[str, list[EvalRecord]]], judge: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(evals)
    fig, axes = plt.subplots(len(variants), 2, figsize=(12, 4.2 * len(variants)), squeeze=False, constrained_layout=True)
    for row, variant in zip(axes, variants):
        n = len(evals[variant])
        for ax, (field, label) in zip(row, (("win_rate", f"win rate vs untrained, {judge}"), ("clean", "clean compliance"))):
            series = aggregate(evals[variant], field)
            if field == "win_rate":
                ax.axhline(0.5, color=COLOURS["initial"], linestyle=":", linewidth=1.2, label="untrained (parity)")
            for arm in ("initial", "oracle"):
                if arm in series:
                    _, mean, low, high, _ = series[arm][0]
                    ax.axhline(mean, color=COLOURS[arm], linestyle="--" if arm == "oracle" else ":", linewidth=1.2, label=f"{arm} ({mean:.2f})")
                    ax.axhspan(low, high, color=COLOURS[arm], alpha=0.08)
            for arm in ("treated", "control"):
                if arm in series:
                    xs = [p[0] for p in series[arm]]
                    ax.plot(xs, [p[1] for p in series[arm]], marker="o", color=COLOURS[arm], label=arm)
                    ax.fill_between(xs, [p[2] for p in series[arm]], [p[3] for p in series[arm]], color=COLOURS[arm], alpha=0.15)
            ax.set_title(f"{variant}: {label}\nmean of {n} profile(s), 95% interval over profiles", fontsize=9)
            ax.set_xlabel("interactions")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def judge_label(folder: Path, plan: dict[str, Any]) -> str:
    """The cells' judge, with the warning a rules judge needs."""
    from harness.runs import read_config

    cell = next((c["id"] for c in plan["cells"] if (folder / "runs" / c["id"] / "config.yaml").is_file()), None)
    kind = (read_config(folder / "runs" / cell).get("judge") or {}).get("kind", "rules") if cell else "rules"
    return "rules judge: the user's own checks, not independent" if kind == "rules" else f"{kind} judge"


def mean_table(by_profile: dict[str, list[EvalRecord]]) -> list[str]:
    """The aggregate curve's last point every profile reached, as a table: means over profiles with 95% t-intervals."""
    n = len(by_profile)
    series = {field: aggregate(by_profile, field) for field in ("clean", "win_rate")}
    x = max((p[0] for p in series["clean"].get("treated", []) if p[4] == n), default=0)
    lines = [f"| mean over {n} profile(s), 95% t-interval over profiles | clean compliance at {x} | win rate vs untrained\\* at {x} |", "|---|---|---|"]
    for arm, name in (("treated", "treated"), ("control", "control"), ("oracle", "oracle (untrained, persona in the prompt)"), ("initial", "untrained")):
        cells = []
        for field in ("clean", "win_rate"):
            point = next((p for p in series[field].get(arm, []) if p[0] == (0 if arm in ("oracle", "initial") else x) and p[4] == n), None)
            cells.append(f"{point[1]:.2f} [{point[2]:.2f}, {point[3]:.2f}]" if point else "0.50 (parity)" if arm == "initial" else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot_heatmap(path: Path, evals: dict[str, dict[str, list[EvalRecord]]], order: dict[str, list[str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(evals)
    height = max(3.0, 0.32 * max(len(order[v]) for v in variants) + 1.5)
    fig, axes = plt.subplots(1, len(variants), figsize=(max(6.0, 3.5 + 0.9 * _points(evals)) * len(variants), height), squeeze=False,
                             constrained_layout=True)
    for ax, variant in zip(axes[0], variants):
        profiles = order[variant]
        table = [gains(evals[variant][p]) for p in profiles]
        xs = sorted({x for row in table for x in row})
        grid = [[row.get(x, float("nan")) for x in xs] for row in table]
        image = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(profiles)), profiles, fontsize=8)
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if value == value:
                    ax.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=7, color="white" if abs(value) > 0.6 else "black")
        ax.set_xlabel("interactions")
        ax.set_title(f"{variant}: treated − control clean compliance", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _points(evals: dict[str, dict[str, list[EvalRecord]]]) -> int:
    return max(len(gains(records)) for by_profile in evals.values() for records in by_profile.values())


def _cell(point: Point | None, share: bool = True) -> str:
    return fmt(point, share) if point is not None else "–"


def table_lines(rows: list[Row]) -> list[str]:
    lines = ["| profile | seeds | untrained compliance | untrained clean | oracle clean | treated clean | control clean | treated − control "
             "| win rate (treated)\\* | degenerate: untrained → treated | relevant (treated) | words: untrained → treated | verdict |",
             "|" + "---|" * 13]
    for r in rows:
        effect = f"{r.effect:+.2f}" if r.effect is not None else "–"
        if "control" in r.paired:
            effect += " [{:+.2f}, {:+.2f}]".format(*r.paired["control"][1:])
        g = r.get
        lines.append(f"| {r.profile} | {r.seeds} | {_cell(g('compliance', 'initial'))} | {_cell(g('clean', 'initial'))} | {_cell(g('clean', 'oracle'))} "
                     f"| {_cell(g('clean', 'treated'))} | {_cell(g('clean', 'control'))} | {effect} | {_cell(g('win_rate', 'treated'))} "
                     f"| {_cell(g('degenerate', 'initial'))} → {_cell(g('degenerate', 'treated'))} | {_cell(g('relevant', 'treated'))} "
                     f"| {_cell(g('mean_words', 'initial'), False)} → {_cell(g('mean_words', 'treated'), False)} | **{r.verdict}** |")
    return lines


def shared_lines(plan: dict[str, Any]) -> list[str]:
    """What the cells shared, in words."""
    controls, cells = plan["controls"], plan["cells"]
    sharing = sum(len(s["cells"]) for s in controls)
    budgets = sorted({tuple(s["budgets"]) for s in controls})
    profiles = {c["profile"] for c in cells}
    lines = [f"- **Control arm**: {len(controls)} shared control run(s) (`shared/`) served {sharing} of {len(cells)} cells, each trained once per "
             "seed, method, grid point and token budgets and scored against every one of its cells' profiles (its user sends only neutral "
             "messages, so its run does not depend on the profile); each cell holds its profile's records as if it had trained the arm itself."
             + (" Budgets (train/eval tokens): " + ", ".join(f"{a}/{b}" for a, b in budgets) + "." if budgets else "")]
    if sharing < len(cells):
        lines.append(f"- {len(cells) - sharing} cell(s) trained their own control arm (alone in their group, no control, a changing user, or "
                     "evaluation with the profile's persona).")
    lines += ["- **Untrained evaluation**: the untrained model's greedy answers are cached on disk by model, prompts and settings "
              "(`core.engine.cached_generate`): generated once per token budget (per worker machine) and read by every other cell; each cell "
              "scores them for its own profile.",
              f"- **Oracle**: {len(profiles)} profile(s); the oracle's answers (the profile in the system prompt) are cached the same way, so "
              "they are generated once per profile and read by the profile's other seeds, methods and grid points."]
    return lines


def write_report(folder: Path) -> Path:
    """summary.md, curve.png and heatmap.png from whatever cells have evaluations (a partial sweep reports as far as it got)."""
    from harness.sweep.folder import SweepFolder, sweep_status

    plan, evals, members = load_cells(folder)
    status = sweep_status(SweepFolder(folder))
    counts = status["cells"]
    lines = [f"# Sweep {plan['name']}", "", f"Spec `{plan['spec']}` ([copy](spec.yaml)); {len(plan['cells'])} cells: "
             + ", ".join(f"{n} {state}" for state, n in counts.items() if n) + f"; wall time {status['wall_seconds'] / 60:.1f} min over "
             f"{status['sessions']} driver session(s). Each cell is a run folder under `runs/` (`hindsight show`, `compare`, "
             "`personalize --resume`); `hindsight sweep status " + plan["name"] + "` shows progress.", "", "## What the cells shared", ""]
    lines += shared_lines(plan)
    adopted = [t for t in status["tasks"] if t.get("adopted")]
    if adopted:
        lines.append(f"- **Adopted**: {len(adopted)} task(s) came finished from another sweep with the same config (copied in, not "
                     "rerun): " + ", ".join(f"`{t['id']}` ({Path(t['adopted']).parent.parent.name})" for t in adopted) + ".")
    order: dict[str, list[str]] = {}
    if evals:
        plot_curves(folder / "curve.png", evals, judge_label(folder, plan))
        lines += ["", "![aggregate curve](curve.png)", "", "![treated minus control](heatmap.png)"]
    for variant, by_profile in evals.items():
        lines += ["", f"**{variant}**", ""] + mean_table(by_profile)
    for variant, by_profile in evals.items():
        rows = sorted((profile_row(p, records) for p, records in by_profile.items()), key=lambda r: -(r.effect if r.effect is not None else -9))
        order[variant] = [r.profile for r in rows]
        tally = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
        room = [r for r in rows if (u := r.get("compliance", "initial")) is not None and u.mean <= ROOM]
        lines += ["", f"## {variant}: {len(rows)} profile(s), {len(members[variant])} cell(s)", "",
                  "Verdicts: " + ", ".join(f"{n} {v}" for v, n in tally.items() if n) + f". Treated beats control (95% intervals apart; with several seeds, the seed-by-seed difference's) on "
                  f"{sum(r.verdict in ('learned', 'control fell') for r in room)} of the {len(room)} profile(s) where the untrained model leaves "
                  f"room (compliance ≤ {ROOM}), and the untrained model too on {sum(r.verdict == 'learned' for r in room)} of them; "
                  f"{sum(r.verdict in ('learned', 'control fell') and r.degeneration_kept() for r in room)} of those {len(room)} beat the "
                  f"control with a degenerate share within {DEGENERATION_SLACK * 100:.0f} points of the untrained model's.",
                  "", "Clean compliance and the other shares at the last evaluation all seeds reached, with 95% intervals (one seed: Wilson over "
                  "the held-out prompts; several: across seeds joined with the pooled Wilson interval); rows sorted by treated − control. With "
                  "several seeds, treated − control carries the 95% t-interval of its seed-by-seed differences (each seed's arms share "
                  "their seed), and the verdict reads that interval, and the same for treated − untrained, rather than the arms' own "
                  "intervals.", ""]
        lines += table_lines(rows)
        lines += ["", f"### {variant}: what the treated arm trained on", "", SIGNAL_NOTE, ""]
        lines += signal_lines(folder, members[variant], order[variant], {c["id"]: c for c in plan["cells"]})
    if evals:
        plot_heatmap(folder / "heatmap.png", evals, order)
    lines += ["", "\\* " + JUDGE_NOTE]
    broken = [t for t in status["tasks"] if t["state"] == "failed"]
    if broken:
        lines += ["", "## Failed", ""] + [f"- `{t['id']}`: {t['error']}" for t in broken]
    path = folder / "summary.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
