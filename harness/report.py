"""Turn a run's records into curves (curve.png), a summary (summary.md) and tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.records import EvalRecord, RunInfo, SampleRecord, TrainRecord, read_jsonl
from harness.changes import report_section
from harness.config import RunConfig
from harness.curves import COLOURS, METRICS, PALETTE, PREFERENCE_FIELDS, TRAINED, Point, by_preference, curves, fmt, load_evals, load_train
from harness.redteam import write_redteam_report
from trainers import METHODS


def plot(run_dir: Path, evals: list[EvalRecord], title: str, changes: Sequence[int] = ()) -> Path:
    """curve.png. A plain run: every metric per arm. Several preferences (flip, continual): win rate, clean compliance
    and compliance with one colour per preference (treated solid with its band, control dash-dotted, oracle dashed),
    the preference-free metrics per arm, and a vertical line where the user changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_preference(evals)
    several = len(groups) > 1
    panels = [m for m in METRICS if m[0] not in ("relevant",)] if several else METRICS
    fig, axes = plt.subplots(2, 4 if not several else 3, figsize=(18 if not several else 15, 7.5), constrained_layout=True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (field, label, share) in zip(axes.flat, panels):
        if field == "win_rate":
            ax.axhline(0.5, color=COLOURS["initial"], linestyle=":", linewidth=1.2, label="untrained (parity)")
        if several and field in PREFERENCE_FIELDS:
            for k, (name, records) in enumerate(groups):
                _draw(ax, curves(records, field, share), colour=PALETTE[k % len(PALETTE)], name=name)
        else:
            _draw(ax, curves(groups[0][1], field, share))
        for x in changes:
            ax.axvline(x, color="black", linestyle="--", linewidth=1, alpha=0.6)
        ax.set_title(label + (" (the user changes at " + ", ".join(map(str, changes)) + ")" if changes and field == "win_rate" else ""))
        ax.set_xlabel("interactions")
        ax.set_xlim(left=0)
        if share:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[:2]:
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(title)
    path = run_dir / "curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw(ax, series_by_arm: dict[str, list[Point]], colour: str | None = None, name: str | None = None) -> None:
    """One metric's arms on ``ax``: trained arms as lines (treated with its band), oracle and untrained as reference lines.
    With ``colour`` (one preference among several) every arm takes it and the arms differ by line style."""
    for arm, series in series_by_arm.items():
        c = colour or COLOURS[arm]
        tag = f"{arm} · {name}" if name else arm
        if arm in ("oracle", "initial"):
            value = series[0].mean
            ax.axhline(value, color=c, linestyle="--" if arm == "oracle" else ":", linewidth=1.2, label=f"{tag} ({value:.2f})")
            continue
        xs = [p.interactions for p in series]
        dashed = colour is not None and arm == "control"
        ax.plot(xs, [p.mean for p in series], marker="o" if not dashed else None, linestyle="-." if dashed else "-", color=c, label=tag)
        if not dashed:
            ax.fill_between(xs, [p.low for p in series], [p.high for p in series], color=c, alpha=0.15)


def final_table(evals: list[EvalRecord]) -> list[tuple[str, int, dict[str, str]]]:
    """One row per arm at its last evaluation: (arm, interactions, {field: 'mean [low, high]'})."""
    rows = []
    for arm in ("initial", "oracle", *TRAINED):
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
    parts = [f"{arm} {series[arm][-1].mean:.2f} ({100 * (series[arm][-1].mean - base):+.0f} points)" for arm in TRAINED if arm in series]
    return f"degenerate answers: untrained {base:.2f}, " + ", ".join(parts) if parts else ""


def skipped_updates(train: Sequence[TrainRecord]) -> dict[str, dict[str, int]]:
    """Per arm and seed ("treated/s0") with at least one update not applied: {"updates": all its updates, reason: count}."""
    out: dict[str, dict[str, int]] = {}
    for record in train:
        counts = out.setdefault(f"{record.arm}/s{record.seed}", {"updates": 0})
        counts["updates"] += 1
        if record.skipped:
            counts[record.skipped] = counts.get(record.skipped, 0) + 1
    return {key: counts for key, counts in out.items() if len(counts) > 1}


def skipped_line(train: Sequence[TrainRecord]) -> str:
    """The updates that were not applied, in words (an arm that skipped them moved less for that reason, not for lack of signal)."""
    parts = []
    for key, counts in skipped_updates(train).items():
        reasons = {k: v for k, v in counts.items() if k != "updates"}
        parts.append(f"{key} {sum(reasons.values())} of {counts['updates']} (" + "; ".join(f"{why}: {n}" for why, n in reasons.items()) + ")")
    return "**Updates not applied:** " + ", ".join(parts) + "." if parts else ""


def irrelevant_followups(pool: str, reference: str | None, evals: list[EvalRecord]) -> str:
    """With a neutral pool other than the built-in small talk (``unrelated``: a user who answers with unrelated questions, the
    paper's irrelevant follow-ups) the control arm is the robustness check: it should move nothing against the untrained model."""
    if pool == "builtin":
        return ""
    moved, cells, x = [], [], None
    for field, label in (("clean", "clean compliance"), ("degenerate", "degenerate"), ("relevant", "relevant"), ("mean_words", "mean words")):
        series = curves(evals, field, field != "mean_words")
        if "control" not in series or "initial" not in series:
            return ""
        start, end = series["initial"][0], series["control"][-1]
        x = end.interactions
        cells.append(f"{label} {fmt(start, field != 'mean_words')} → {fmt(end, field != 'mean_words')}")
        if field != "mean_words" and (end.low > start.high or end.high < start.low):
            moved.append(label)
    kl = curves(evals, "kl", False).get("control")
    cells += [f"KL to initial {fmt(kl[-1], False)}"] if kl else []
    verdict_ = "moved " + " and ".join(moved) + " beyond the 95% intervals" if moved else "moved nothing beyond the 95% intervals"
    ref = f"; advantage reference {reference}" if reference else ""
    return (f"**Irrelevant follow-ups** (the control arm's user sends the `{pool}` pool{ref}): "
            f"after {x} interactions the control arm {verdict_}: " + ", ".join(cells) + ".")


def _reference(config: RunConfig) -> str | None:
    return config.trainer.advantage_reference if config.method == "sdpo" else None


def _lines(text: str) -> list[str]:
    return ["", text] if text else []


def write_report(run_dir: Path) -> Path:
    config = RunConfig.from_file(run_dir / "config.yaml")
    evals = load_evals(run_dir)
    groups = by_preference(evals)
    title = f"{run_dir.name}: {config.method} · {describe_user(config)} · {config.seeds} seed(s)"
    plot(run_dir, evals, title, config.changes())
    lines = [f"# {run_dir.name}", "", f"method **{config.method}**, user **{describe_user(config)}**, model `{config.policy.model}`, "
             f"{config.interactions} interactions in batches of {config.batch_size}, {config.seeds} seed(s), "
             f"simulator {config.simulator.kind}, judge {config.judge.kind}; {_trainer_line(config)}, lora {'on' if config.policy.lora else 'off'}.",
             "", side_effects(groups[0][1]), *_lines(skipped_line(load_train(run_dir))),
             *_lines(irrelevant_followups(config.neutral_pool, _reference(config), groups[0][1])),
             "", "![curves](curve.png)"]
    stops = {(r.arm, r.seed): r.stopped for r in evals if r.stopped}
    lines += ["", *(f"**{arm} s{seed} stopped:** {why}." for (arm, seed), why in sorted(stops.items()))] if stops else []
    for name, records in groups:
        lines += ["", f"## Preference: {name}" if name else "", f"**{verdict(records)}**", "", "### Last evaluation (95% intervals)", ""]
        lines += table_lines(records)
        for field, label in (("win_rate", "Win rate vs the untrained model"), ("clean", "Clean compliance")):
            lines += ["", f"### {label} over interactions", ""] + over_time(records, field)
    lines += report_section(run_dir, config, evals, title)
    lines += ["", "## Example answers (first held-out prompts, seed " + str(config.seed) + (f", scored for {groups[0][0]}" if groups[0][0] else "") + ")", ""]
    lines += _examples(run_dir, config, groups[0][0])
    info_path = run_dir / "run.json"
    if info_path.is_file():
        info = RunInfo.model_validate_json(info_path.read_text())
        lines += ["", f"Run started {info.created}; versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()) + "."]
        lines += [f"LLM {role}: {u.describe()}." for role, u in (info.llm_usage or {}).items()]
    if config.redteam is not None:
        lines += ["", f"Red-team report (drift toward the user, with and without the guard): [{write_redteam_report(run_dir).name}](redteam.md)."]
    path = run_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def describe_user(config: RunConfig) -> str:
    """The simulated user in words, e.g. 'concise, flipped to its opposite at 32' or 'concise, + no_emojis at 16'."""
    if config.continual is not None:
        return config.profile + "".join(f", + {name} at {x}" for name, x in zip(config.continual.add, config.changes()))
    if config.flip_at is not None:
        return f"{config.profile}, flipped to its opposite at {config.flip_at}"
    return config.profile


def table_lines(evals: list[EvalRecord]) -> list[str]:
    """The last evaluation per arm as a markdown table."""
    lines = ["| arm | interactions | " + " | ".join(label for _, label, _ in METRICS) + " |", "|" + "---|" * (len(METRICS) + 2)]
    for arm, x, cells in final_table(evals):
        lines.append(f"| {arm} | {x} | " + " | ".join(cells.get(f, "–") for f, _, _ in METRICS) + " |")
    return lines


def over_time(evals: list[EvalRecord], field: str) -> list[str]:
    """A markdown table of one share per evaluation point for the trained arms (the oracle's value in the header)."""
    series = curves(evals, field, True)
    arms = [a for a in TRAINED if a in series]
    if not arms:
        return ["(not measured)"]
    lines = [f"oracle: {fmt(series['oracle'][0], True)}", ""] if "oracle" in series else []
    lines += ["| interactions | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for x in sorted({p.interactions for a in arms for p in series[a]}):
        cells = [next((fmt(p, True) for p in series[a] if p.interactions == x), "–") for a in arms]
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    return lines


def _examples(run_dir: Path, config: RunConfig, preference: str | None, count: int = 3) -> list[str]:
    samples = [s for s in read_jsonl(run_dir / "samples.jsonl", SampleRecord) if s.profile == preference]
    last: dict[str, int] = {}
    for s in samples:
        if s.seed == config.seed:
            last[s.arm] = max(last.get(s.arm, 0), s.interactions)
    prompts = list(dict.fromkeys(s.prompt for s in samples))[:count]
    lines = []
    for prompt in prompts:
        lines += [f"**Prompt:** {prompt}", ""]
        for arm in ("initial", "oracle", *TRAINED):
            match = next((s for s in samples if s.arm == arm and s.prompt == prompt and s.seed == config.seed and s.interactions == last.get(arm)), None)
            if match:
                flags = ", ".join(match.failed_checks + match.degeneration) or ("clean" if match.clean else "not relevant")
                flags += f"; judged {match.verdict} vs untrained" if match.verdict else ""
                lines.append(f"- *{arm}* ({match.interactions} interactions, {match.words} words, {flags}): {match.answer[:400]!r}")
        lines.append("")
    return lines


def _trainer_line(config) -> str:
    """The method's own settings that matter most, for the summary's first line (its registration's ``summary``)."""
    summary = METHODS.info(config.method).get("summary")
    return summary(config) if summary is not None else f"method {config.method}"
