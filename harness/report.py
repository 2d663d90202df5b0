"""Turn a run's records into curves (curve.png), a summary (summary.md) and tables for the CLI."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.records import METRIC, EvalRecord, RunInfo, SampleRecord, TrainRecord, read_jsonl
from harness.stats import interval

# (field, label, is a share) in the order they are drawn and tabulated
METRICS = [
    ("clean", "clean compliance", True),
    ("compliance", "compliance", True),
    ("degenerate", "degenerate", True),
    ("relevant", "relevant", True),
    ("mean_words", "mean words", False),
    ("kl", "KL to initial", False),
]
COLOURS = {"treated": "#1f77b4", "control": "#ff7f0e", "oracle": "#2ca02c", "initial": "#555555"}


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
        if arm in ("treated", "control") and initial:
            points = {0: initial, **points}
        series = []
        for x in sorted(points):
            records = points[x]
            mean, low, high = interval([getattr(r, field) for r in records], records[0].n, share)
            series.append(Point(x, mean, max(low, 0.0), high, len(records)))  # every metric here is non-negative
        out[arm] = series
    return out


def plot(run_dir: Path, evals: list[EvalRecord], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), constrained_layout=True)
    for ax, (field, label, share) in zip(axes.flat, METRICS):
        for arm, series in curves(evals, field, share).items():
            colour = COLOURS[arm]
            if arm in ("oracle", "initial"):
                value = series[0].mean
                ax.axhline(value, color=colour, linestyle="--" if arm == "oracle" else ":", linewidth=1.2, label=f"{arm} ({value:.2f})")
                continue
            xs = [p.interactions for p in series]
            ax.plot(xs, [p.mean for p in series], marker="o", color=colour, label=arm)
            ax.fill_between(xs, [p.low for p in series], [p.high for p in series], color=colour, alpha=0.15)
        ax.set_title(label)
        ax.set_xlabel("interactions")
        if share:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    path = run_dir / "curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fmt(point: Point, share: bool) -> str:
    if point.high - point.low < 1e-12:
        return f"{point.mean:.2f}" if share else f"{point.mean:.3g}"
    return f"{point.mean:.2f} [{point.low:.2f}, {point.high:.2f}]" if share else f"{point.mean:.3g} [{point.low:.3g}, {point.high:.3g}]"


def final_table(evals: list[EvalRecord]) -> list[tuple[str, int, dict[str, str]]]:
    """One row per arm at its last evaluation: (arm, interactions, {field: 'mean [low, high]'})."""
    rows = []
    for arm in ("initial", "oracle", "treated", "control"):
        cells, x = {}, 0
        for field, _, share in METRICS:
            series = curves(evals, field, share).get(arm)
            if series:
                cells[field] = fmt(series[-1], share)
                x = series[-1].interactions
        if cells:
            rows.append((arm, x, cells))
    return rows


def verdict(evals: list[EvalRecord]) -> str:
    """Treated vs control on clean compliance at the last evaluation, read off the intervals."""
    series = curves(evals, "clean", True)
    if "treated" not in series or "control" not in series:
        return "no control arm: run with --control to tell learning from the hindsight prompt's own pull"
    t, c = series["treated"][-1], series["control"][-1]
    gap = t.mean - c.mean
    if t.low > c.high:
        return f"treated beats control by {gap:+.2f} clean compliance; the 95% intervals do not overlap"
    if c.low > t.high:
        return f"control beats treated by {-gap:+.2f}: the change is not learning from the user"
    return f"treated vs control: {gap:+.2f} clean compliance, but the 95% intervals overlap (more seeds or interactions needed)"


def side_effects(evals: list[EvalRecord]) -> str:
    """Degeneration of the trained arms against the untrained model, in points (the price of the change)."""
    series = curves(evals, "degenerate", True)
    if "initial" not in series:
        return ""
    base = series["initial"][0].mean
    parts = [f"{arm} {series[arm][-1].mean:.2f} ({100 * (series[arm][-1].mean - base):+.0f} points)" for arm in ("treated", "control") if arm in series]
    return f"degenerate answers: untrained {base:.2f}, " + ", ".join(parts) if parts else ""


def write_report(run_dir: Path) -> Path:
    config = RunConfig.from_file(run_dir / "config.yaml")
    evals = load_evals(run_dir)
    title = f"{run_dir.name}: {config.method} · profile {config.profile} · {config.seeds} seed(s)"
    plot(run_dir, evals, title)
    lines = [f"# {run_dir.name}", "", f"method **{config.method}**, profile **{config.profile}**, model `{config.policy.model}`, "
             f"{config.interactions} interactions in batches of {config.batch_size}, {config.seeds} seed(s), "
             f"simulator {config.simulator.kind}; trainer: lr {config.trainer.lr:g}, loss {config.trainer.loss}, "
             f"baseline {config.trainer.baseline}, kl_anchor {config.trainer.kl_anchor:g}, lora {'on' if config.policy.lora else 'off'}.",
             "", f"**{verdict(evals)}**", "", side_effects(evals), "", "![curves](curve.png)", "", "## Last evaluation (95% intervals)", ""]
    header = "| arm | interactions | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines += [header, "|" + "---|" * (len(METRICS) + 2)]
    for arm, x, cells in final_table(evals):
        lines.append(f"| {arm} | {x} | " + " | ".join(cells.get(f, "–") for f, _, _ in METRICS) + " |")
    lines += ["", "## Clean compliance over interactions", ""]
    series = curves(evals, "clean", True)
    xs = sorted({p.interactions for arm in ("treated", "control") for p in series.get(arm, [])})
    lines += ["| interactions | " + " | ".join(a for a in ("treated", "control") if a in series) + " |", "|---|" + "---|" * sum(a in series for a in ("treated", "control"))]
    for x in xs:
        cells = [next((fmt(p, True) for p in series[a] if p.interactions == x), "–") for a in ("treated", "control") if a in series]
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    lines += ["", "## Example answers (first held-out prompts, seed " + str(config.seed) + ")", ""]
    lines += _examples(run_dir, config)
    info_path = run_dir / "run.json"
    if info_path.is_file():
        info = RunInfo.model_validate_json(info_path.read_text())
        lines += ["", f"Run started {info.created}; versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()) + "."]
    path = run_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _examples(run_dir: Path, config: RunConfig, count: int = 3) -> list[str]:
    samples = list(read_jsonl(run_dir / "samples.jsonl", SampleRecord))
    last: dict[str, int] = {}
    for s in samples:
        if s.seed == config.seed:
            last[s.arm] = max(last.get(s.arm, 0), s.interactions)
    prompts = list(dict.fromkeys(s.prompt for s in samples))[:count]
    lines = []
    for prompt in prompts:
        lines += [f"**Prompt:** {prompt}", ""]
        for arm in ("initial", "oracle", "treated", "control"):
            match = next((s for s in samples if s.arm == arm and s.prompt == prompt and s.seed == config.seed and s.interactions == last.get(arm)), None)
            if match:
                flags = ", ".join(match.failed_checks + match.degeneration) or ("clean" if match.clean else "not relevant")
                lines.append(f"- *{arm}* ({match.interactions} interactions, {match.words} words, {flags}): {match.answer[:400]!r}")
        lines.append("")
    return lines
