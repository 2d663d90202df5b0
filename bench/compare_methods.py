"""Methods side by side: clean compliance, degenerate share, mean words and KL to the initial policy over interactions.

    python bench/compare_methods.py results/cmp-sdpo results/cmp-rlhi-rewrite ... [--out results/cmp-methods.png]

Each run's treated arm (seed mean when it has several), with the untrained model as the x = 0 point; prints a
markdown table of every evaluation point and writes one PNG.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import yaml

from core.records import METRIC, EvalRecord, TrainRecord, read_jsonl

PANELS = [("clean", "clean compliance"), ("degenerate", "degenerate"), ("mean_words", "mean words"), ("kl", "KL(π_θ ‖ π_0)")]
FIELDS = [*(f for f, _ in PANELS), "compliance", "relevant", "win_rate"]


def load(run: Path) -> tuple[str, dict[int, dict[str, float]], dict[str, float]]:
    """The run's method, its metrics per evaluation point (treated arm, seed mean; x = 0 from the untrained model), and training totals."""
    method = yaml.safe_load((run / "config.yaml").read_text())["method"]
    points: dict[int, list[EvalRecord]] = defaultdict(list)
    totals: dict[str, float] = defaultdict(float)
    for record in read_jsonl(run / "metrics.jsonl", METRIC):
        if isinstance(record, EvalRecord) and record.arm in ("treated", "initial") and record.profile is None:
            points[record.interactions].append(record)
        elif isinstance(record, TrainRecord) and record.arm == "treated":
            totals["updates"] += 1
            totals["skipped"] += record.skipped is not None
            totals["pairs"] += record.metrics.get("pairs", 0.0)
            totals["train_s"] += record.timings.get("step", 0.0)
    table = {x: {f: sum(getattr(r, f) or 0.0 for r in rs) / len(rs) for f in FIELDS} for x, rs in sorted(points.items())}
    return method, table, dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/cmp-methods.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [load(run) for run in args.runs]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    for method, table, _ in loaded:
        xs = list(table)
        for ax, (field, _) in zip(axes, PANELS):
            ax.plot(xs, [table[x][field] for x in xs], marker="o", label=method)
    for ax, (_, title) in zip(axes, PANELS):
        ax.set_title(title)
        ax.set_xlabel("interactions")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[0].legend()
    fig.suptitle("same profile, seed, prompts and budget; treated arm; held-out greedy answers", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}\n")
    print("| method | interactions | clean | compliance | degenerate | relevant | mean words | KL | win rate vs initial |\n|---|---|---|---|---|---|---|---|---|")
    for method, table, _ in loaded:
        for x, row in table.items():
            win = f"{row['win_rate']:.2f}" if x else "–"
            print(f"| {method} | {x} | {row['clean']:.2f} | {row['compliance']:.2f} | {row['degenerate']:.2f} | {row['relevant']:.2f} | {row['mean_words']:.0f} "
                  f"| {row['kl']:.3f} | {win} |")
    print("\n| method | updates | skipped | pairs trained on | mean step (s) |\n|---|---|---|---|---|")
    for method, _, totals in loaded:
        updates = totals.get("updates", 0)
        pairs = f"{totals.get('pairs', 0):.0f}" if method != "sdpo" else "–"
        print(f"| {method} | {updates:.0f} | {totals.get('skipped', 0):.0f} | {pairs} | {totals.get('train_s', 0) / max(updates, 1):.0f} |")


if __name__ == "__main__":
    main()
