"""What each profile's treated arm trained on, from its interactions and updates: the sweep report's second table.

A profile the method did not learn is told apart from here: a user who rarely complained (little signal), answers cut at
the token cap (the user never sees a finished answer and end-of-turn gets no signal), a complaint that scores the answer
barely differently from a neutral reply (a small advantage), or an update that barely moved the policy (small KL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from core.records import InteractionRecord, read_jsonl
from harness.runs import read_evals


@dataclass
class Signal:
    """One profile's treated-arm training signal, seeds pooled."""

    profile: str
    interactions: int
    complaints: float  # share of follow-ups that were not the satisfied kind
    finished: float  # share of sampled answers that ended on end-of-turn
    words_first: float  # mean words of the first and last quarter of the sampled answers
    words_last: float
    advantage_complaint: float | None  # mean over answers of the answer's mean A_t, after a complaint / a satisfied reply
    advantage_satisfied: float | None
    eos_complaint: float | None  # mean A_t of the end-of-turn token (finished answers), after a complaint / a satisfied reply
    eos_satisfied: float | None
    kl: float | None  # treated arm's KL to the initial policy at its last evaluation


def _mean(values: list[float]) -> float | None:
    return fmean(values) if values else None


def profile_signal(profile: str, runs: list[Path]) -> Signal | None:
    """The treated arm's records of ``runs`` (one profile's cells), or None when none has interactions yet."""
    records: list[InteractionRecord] = []
    kls: list[float] = []
    for run in runs:
        mine = [r for r in read_jsonl(run / "interactions.jsonl", InteractionRecord) if r.arm == "treated" and not r.failed]
        records += mine
        evals = [r for r in read_evals(run) if r.arm == "treated" and r.kl is not None]
        if evals:
            kls.append(max(evals, key=lambda r: r.interactions).kl)
    if not records:
        return None
    quarter = max(1, len(records) // (4 * len(runs)))
    by_seed: dict[int, list[InteractionRecord]] = {}
    for r in records:
        by_seed.setdefault(r.seed, []).append(r)
    first = [len(r.response.split()) for rs in by_seed.values() for r in sorted(rs, key=lambda r: r.index)[:quarter]]
    last = [len(r.response.split()) for rs in by_seed.values() for r in sorted(rs, key=lambda r: r.index)[-quarter:]]
    complaint = [r for r in records if r.satisfied is False]
    satisfied = [r for r in records if r.satisfied]
    return Signal(
        profile, len(records), len(complaint) / len(records), sum(r.finished for r in records) / len(records), fmean(first), fmean(last),
        _mean([r.advantage["mean"] for r in complaint if "mean" in r.advantage]), _mean([r.advantage["mean"] for r in satisfied if "mean" in r.advantage]),
        _mean([r.advantage["eos"] for r in complaint if "eos" in r.advantage]), _mean([r.advantage["eos"] for r in satisfied if "eos" in r.advantage]),
        _mean(kls))


def _num(value: float | None, sign: bool = True) -> str:
    return "–" if value is None else f"{value:+.2f}" if sign else f"{value:.2f}"


def signal_lines(folder: Path, members: list[str], order: list[str], profile_of: dict[str, str]) -> list[str]:
    """The table, one row per profile in ``order``, from the cells ``members`` (cell id → profile in ``profile_of``)."""
    lines = ["| profile | interactions | complaints | sampled answers finished | words sampled: first → last quarter "
             "| mean A_t: complaint / satisfied | end-of-turn A_t: complaint / satisfied | KL to initial (treated, last point) |",
             "|" + "---|" * 8]
    for profile in order:
        signal = profile_signal(profile, [folder / "runs" / c for c in members if profile_of[c] == profile])
        if signal is None:
            continue
        s = signal
        lines.append(f"| {profile} | {s.interactions} | {s.complaints:.2f} | {s.finished:.2f} | {s.words_first:.0f} → {s.words_last:.0f} "
                     f"| {_num(s.advantage_complaint)} / {_num(s.advantage_satisfied)} | {_num(s.eos_complaint)} / {_num(s.eos_satisfied)} "
                     f"| {_num(s.kl, False) if s.kl is None or s.kl >= 0.01 else f'{s.kl:.3f}'} |")
    return lines
