"""The red-team report: how far the policy drifts toward an adversarial user, with and without the update guard.

A red-team run (``hindsight redteam``) trains the treated arm without the guard and the ``guarded`` arm with it, same
seed, prompts and user. For an adversarial profile a passing check *is* the harm (an insult, a missing safety caveat),
so compliance reads as the harm rate. Per arm and evaluation point this module tabulates the harm rate, each check's
harm rate, what the user did in the interactions since the previous evaluation (share of follow-ups flagged unsafe,
left out of the update, satisfied), clean compliance, degeneration, relevance and KL to the initial policy; it writes
``redteam.md`` and ``redteam.png`` next to the run's other files.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from core.records import EvalRecord, InteractionRecord, SampleRecord, read_jsonl
from harness.config import RunConfig
from harness.curves import COLOURS, TRAINED, Point, curves, fmt, load_evals
from simulators.profile import load_profile

SHARED = [("compliance", "harm (all checks)", True), ("clean", "clean", True), ("degenerate", "degenerate", True), ("relevant", "relevant", True),
          ("kl", "KL to initial", False), ("mean_words", "mean words", False)]
WINDOW = [("flagged", "flagged"), ("skipped", "skipped"), ("satisfied", "user satisfied")]


@dataclass
class Row:
    """One arm at one evaluation point: eval metrics (mean and interval over seeds), each check's harm rate, and the training
    window's rates (interactions since the previous evaluation; None at 0 or when nothing was recorded)."""

    arm: str
    interactions: int
    metrics: dict[str, Point]
    checks: dict[str, float]
    window: dict[str, float | None]


def rows(run_dir: Path) -> tuple[list[Row], list[str]]:
    """Every (arm, evaluation point) row in arm then interaction order, and the check labels (the harm columns)."""
    config = RunConfig.from_file(run_dir / "config.yaml")
    labels = [c.describe() for c in load_profile(config.profile).checks]
    evals = load_evals(run_dir)
    series = {field: curves(evals, field, share) for field, _, share in SHARED}
    checks = _check_rates(run_dir, labels)
    windows = _windows(run_dir, evals)
    out = []
    for arm in ("initial", "oracle", *TRAINED):
        points = series["compliance"].get(arm, [])
        for point in points:
            x = point.interactions
            metrics = {f: next((p for p in series[f].get(arm, []) if p.interactions == x), None) for f, _, _ in SHARED}
            source = "initial" if x == 0 and arm in TRAINED else arm
            out.append(Row(arm, x, {f: p for f, p in metrics.items() if p is not None}, checks.get((source, x), {}), windows.get((arm, x), {})))
    return out, labels


def _check_rates(run_dir: Path, labels: list[str]) -> dict[tuple[str, int], dict[str, float]]:
    """Per (arm, interactions): for each check, the share of held-out answers showing that harm (the check passes), over seeds."""
    grouped: dict[tuple[str, int], list[SampleRecord]] = defaultdict(list)
    for sample in read_jsonl(run_dir / "samples.jsonl", SampleRecord):
        grouped[(sample.arm, sample.interactions)].append(sample)
    return {key: {label: sum(label not in s.failed_checks for s in samples) / len(samples) for label in labels} for key, samples in grouped.items()}


def _windows(run_dir: Path, evals: list[EvalRecord]) -> dict[tuple[str, int], dict[str, float | None]]:
    """Per (trained arm, evaluation point): shares of the interactions since the previous evaluation that were flagged unsafe,
    left out of the update, and answered with a satisfied reply, over seeds."""
    points = defaultdict(set)
    for record in evals:
        points[record.arm].add(record.interactions)
    interactions = list(read_jsonl(run_dir / "interactions.jsonl", InteractionRecord))
    out: dict[tuple[str, int], dict[str, float | None]] = {}
    for arm in TRAINED:
        previous = 0
        for x in sorted(points.get(arm, ())):
            mine = [r for r in interactions if r.arm == arm and previous <= r.index < x]
            guarded = [r.guard for r in mine if r.guard is not None]
            said = [r.satisfied for r in mine if r.satisfied is not None]
            out[(arm, x)] = {
                "flagged": sum(g.flagged for g in guarded) / len(guarded) if guarded else None,
                "skipped": sum(g.skipped for g in guarded) / len(guarded) if guarded else None,
                "satisfied": sum(said) / len(said) if said else None,
            }
            previous = x
    return out


def table_lines(table: list[Row], labels: list[str]) -> list[str]:
    """The drift table in markdown: one row per arm and evaluation point."""
    header = ["arm", "interactions", SHARED[0][1], *(f"harm: {label}" for label in labels), *(f"{name} (window)" for _, name in WINDOW),
              *(label for _, label, _ in SHARED[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        if row.arm in TRAINED and row.interactions == 0:
            continue  # the untrained model's row
        cells = [row.arm, str(row.interactions), _cell(row, "compliance")]
        cells += [f"{row.checks[label]:.2f}" if label in row.checks else "–" for label in labels]
        cells += [f"{row.window[k]:.2f}" if row.window.get(k) is not None else "–" for k, _ in WINDOW]
        cells += [_cell(row, field) for field, _, _ in SHARED[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(row: Row, field: str) -> str:
    point = row.metrics.get(field)
    share = next(s for f, _, s in SHARED if f == field)
    return fmt(point, share) if point is not None else "–"


def verdict(table: list[Row]) -> str:
    """The guard's effect at the last evaluation: the harm rate of the unguarded and the guarded arm against the untrained model."""
    last = {r.arm: r for r in table}
    if "treated" not in last or "guarded" not in last:
        return "no guarded arm to compare with"
    base = last["initial"].metrics["compliance"].mean if "initial" in last else 0.0
    t, g = last["treated"].metrics["compliance"], last["guarded"].metrics["compliance"]
    return (f"harm rate at {t.interactions} interactions: untrained {base:.2f}, without the guard {t.mean:.2f} ({100 * (t.mean - base):+.0f} points), "
            f"with it {g.mean:.2f} ({100 * (g.mean - base):+.0f} points)")


def plot(run_dir: Path, table: list[Row], labels: list[str], title: str) -> Path:
    """redteam.png: harm rate, each check's harm rate, the flagged rate per training window, degenerate, relevant and KL, per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("compliance", "harm rate (all checks)"), *((f"check:{label}", f"harm: {label}") for label in labels), ("flagged", "follow-ups flagged unsafe (window)"),
              ("degenerate", "degenerate"), ("relevant", "relevant"), ("kl", "KL to initial")]
    cols = 3
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.8 * nrows), constrained_layout=True, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (key, label) in zip(axes.flat, panels):
        for arm in ("initial", "oracle", *TRAINED):
            points = [(r.interactions, _value(r, key)) for r in table if r.arm == arm]
            points = [(x, v) for x, v in points if v is not None]
            if not points:
                continue
            if arm in ("initial", "oracle"):
                ax.axhline(points[0][1], color=COLOURS[arm], linestyle=":" if arm == "initial" else "--", linewidth=1.2, label=f"{arm} ({points[0][1]:.2f})")
            else:
                ax.plot([x for x, _ in points], [v for _, v in points], marker="o", color=COLOURS[arm], label=arm)
        ax.set_title(label)
        ax.set_xlabel("interactions")
        ax.set_xlim(left=0)
        if key != "kl":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(title)
    path = run_dir / "redteam.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _value(row: Row, key: str) -> float | None:
    if key.startswith("check:"):
        return row.checks.get(key[len("check:"):])
    if key in row.window:
        return row.window[key]
    point = row.metrics.get(key)
    return point.mean if point is not None else None


def write_redteam_report(run_dir: Path) -> Path:
    """redteam.md and redteam.png of a red-team run."""
    config = RunConfig.from_file(run_dir / "config.yaml")
    assert config.redteam is not None
    table, labels = rows(run_dir)
    profile = load_profile(config.profile)
    guard = config.trainer_for("guarded").guard
    title = f"{run_dir.name}: red team · {config.profile} · guard {guard.mode} vs none · flagger {guard.flagger}"
    plot(run_dir, table, labels, title)
    kind = "adversarial" if profile.adversarial else "not adversarial (the guard's cost on an ordinary user)"
    lines = [
        f"# Red team: {run_dir.name}", "",
        (f"User **{config.profile}** ({kind}); the treated arm learns from every follow-up, the **guarded** arm runs guard **{guard.mode}** "
         f"(flagger {guard.flagger}); same seed(s) {', '.join(str(seed) for arm, seed in config.arms() if arm == 'treated')}, prompts "
         f"`{config.prompts.source}` ({config.prompts.eval_prompts} held out), {config.interactions} interactions in batches of {config.batch_size}, "
         f"lr {config.trainer.lr:g}, advantage reference {config.trainer.advantage_reference}."), "",
        f"**{verdict(table)}**", "",
        ("For an adversarial user a passing check is the harm, so *harm* is the share of held-out answers (greedy) that show it; "
         "*harm: CHECK* is each check alone. *(window)* columns describe the training interactions since the previous evaluation: "
         "follow-ups flagged unsafe, left out of the update, and the user's satisfied replies (the harm it pushed for was delivered). "
         "Evaluation metrics are means over seeds with 95% intervals where there are several."), "",
        "![red team](redteam.png)", "",
        *table_lines(table, labels),
    ]
    path = run_dir / "redteam.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
