"""What each profile's treated arm trained on, from its interactions and updates: the sweep report's second table.

A profile the method did not learn is told apart from here: a user who rarely complained (little signal), answers cut at
the token cap (the user never sees a finished answer and end-of-turn gets no signal), a complaint that scores the answer
barely differently from a neutral reply (a small advantage), an update that barely moved the policy (small KL), a user
whose checks a looping or off-topic answer passes, so that the satisfied reply reinforces it, or a policy whose greedy
answers loop while the sampled ones the user reads do not, so that no follow-up can act on the loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from core.records import InteractionRecord, SignalRecord, read_jsonl
from core.text import Embedder
from harness.runs import read_evals
from harness.signals import SIGNALS
from judges.degeneration import assess

OFF_TOPIC = 0.3  # below this cosine to its prompt an answer is off-topic (EvalSettings.min_prompt_similarity's default)


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
    satisfied_bad: float | None = None  # share of the satisfied replies that went to a looping or off-topic answer
    off_topic_first: float | None = None  # share of off-topic answers (cosine to the prompt below 0.3) in the first / last quarter
    off_topic_last: float | None = None
    rms: float | None = None  # root mean square of A_t over every trained token of the treated arm
    control_rms: float | None = None  # the same for the control arm: what neutral messages alone give, the noise floor
    looping_sampled: float | None = None  # share of the last quarter's sampled answers (what the user read) that loop
    looping_greedy: float | None = None  # share of the treated arm's greedy held-out answers that loop, at its last evaluation


def _mean(values: list[float]) -> float | None:
    return fmean(values) if values else None


def token_rms(paths: list[Path], arm: str) -> float | None:
    """Root mean square of the per-token advantage over the ``arm`` records of these signals.jsonl files (None: none)."""
    total, count = 0.0, 0
    for path in paths:
        for record in read_jsonl(path, SignalRecord):
            if record.arm == arm:
                total += sum(a * a for a in record.advantage)
                count += len(record.advantage)
    return (total / count) ** 0.5 if count else None


def profile_signal(profile: str, runs: list[Path], controls: list[Path] = (), embedder: Embedder | None = None) -> Signal | None:
    """The treated arm's records of ``runs`` (one profile's cells), or None when none has interactions yet; ``controls``:
    the folders that trained their control arms (shared controls, or the runs themselves); ``embedder`` tells off-topic
    answers (cosine to their prompt below the evaluation's 0.3), else those columns stay empty."""
    records: list[InteractionRecord] = []
    kls: list[float] = []
    greedy: list[float] = []
    for run in runs:
        mine = [r for r in read_jsonl(run / "interactions.jsonl", InteractionRecord) if r.arm == "treated" and not r.failed]
        records += mine
        evals = [r for r in read_evals(run) if r.arm == "treated" and r.kl is not None]
        if evals:
            kls.append(max(evals, key=lambda r: r.interactions).kl)
            greedy.append(max(evals, key=lambda r: r.interactions).looping)
    if not records:
        return None
    quarter = max(1, len(records) // (4 * len(runs)))
    by_seed: dict[int, list[InteractionRecord]] = {}
    for r in sorted(records, key=lambda r: (r.seed, r.index)):
        by_seed.setdefault(r.seed, []).append(r)
    first = [r for rs in by_seed.values() for r in rs[:quarter]]
    last = [r for rs in by_seed.values() for r in rs[-quarter:]]
    off: dict[int, bool] = {}
    if embedder is not None:
        similarity = embedder.similarity([r.response for r in records], [r.prompt for r in records])
        off = {id(r): value < OFF_TOPIC for r, value in zip(records, similarity)}
    complaint = [r for r in records if r.satisfied is False]
    satisfied = [r for r in records if r.satisfied]
    bad = _mean([float(assess(r.response, r.finished).looping or off.get(id(r), False)) for r in satisfied])

    def off_share(chosen: list[InteractionRecord]) -> float | None:
        return _mean([float(off[id(r)]) for r in chosen]) if off else None

    def advantage(chosen: list[InteractionRecord], key: str) -> float | None:
        return _mean([r.advantage[key] for r in chosen if key in r.advantage])

    return Signal(
        profile, len(records), complaints=len(complaint) / len(records), finished=sum(r.finished for r in records) / len(records),
        words_first=fmean(len(r.response.split()) for r in first), words_last=fmean(len(r.response.split()) for r in last),
        advantage_complaint=advantage(complaint, "mean"), advantage_satisfied=advantage(satisfied, "mean"),
        eos_complaint=advantage(complaint, "eos"), eos_satisfied=advantage(satisfied, "eos"), kl=_mean(kls), satisfied_bad=bad,
        off_topic_first=off_share(first), off_topic_last=off_share(last), rms=token_rms([r / SIGNALS for r in runs], "treated"),
        control_rms=token_rms([c / SIGNALS for c in controls], "control"),
        looping_sampled=_mean([float(assess(r.response, r.finished).looping) for r in last]), looping_greedy=_mean(greedy))


def _num(value: float | None, sign: bool = True) -> str:
    return "–" if value is None else f"{value:+.2f}" if sign else f"{value:.2f}"


def signal_lines(folder: Path, members: list[str], order: list[str], cells: dict[str, dict]) -> list[str]:
    """The table, one row per profile in ``order``, from the cells ``members`` (``cells``: plan.json's cells by id)."""
    lines = ["| profile | interactions | complaints | satisfied replies to looping or off-topic answers | off-topic answers: first → last quarter "
             "| sampled answers finished | words sampled: first → last quarter | mean A_t: complaint / satisfied "
             "| end-of-turn A_t: complaint / satisfied | A_t RMS per token: treated / control "
             "| looping answers: sampled (last quarter) / greedy held-out (last point) | KL to initial (treated, last point) |",
             "|" + "---|" * 12]
    embedder = Embedder() if members else None
    for profile in order:
        mine = [c for c in members if cells[c]["profile"] == profile]
        controls = [folder / "shared" / cells[c]["control"] if cells[c].get("control") else folder / "runs" / c for c in mine]
        s = profile_signal(profile, [folder / "runs" / c for c in mine], controls, embedder)
        if s is None:
            continue
        kl = _num(s.kl, False) if s.kl is None or s.kl >= 0.01 else f"{s.kl:.3f}"
        lines.append(f"| {profile} | {s.interactions} | {s.complaints:.2f} | {_num(s.satisfied_bad, False)} "
                     f"| {_num(s.off_topic_first, False)} → {_num(s.off_topic_last, False)} | {s.finished:.2f} | {s.words_first:.0f} → {s.words_last:.0f} "
                     f"| {_num(s.advantage_complaint)} / {_num(s.advantage_satisfied)} | {_num(s.eos_complaint)} / {_num(s.eos_satisfied)} "
                     f"| {_num(s.rms, False)} / {_num(s.control_rms, False)} | {_num(s.looping_sampled, False)} / {_num(s.looping_greedy, False)} | {kl} |")
    return lines
