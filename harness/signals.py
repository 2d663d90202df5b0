"""The per-token training signal: written beside the run log, and drawn for one answer under several follow-ups.

``signals.jsonl`` holds one ``SignalRecord`` per trained interaction (the loop calls ``write_signals`` after each update):
SDPO's advantage per answer token, or an RLHI method's pair with the gradient weight of each side's tokens.

``signal_figure`` is the SDPO paper's signal analysis: one prompt and answer, and the per-token advantage the trainer
would give it were the user to reply with each of several follow-ups (the profile's complaint, a satisfied reply, an
unrelated question, a neutral message), with the trainer's own scoring (``SDPOTrainer.token_advantages``).
``hindsight signal`` writes it as a PNG heatmap and as JSON that ``hindsight view`` shows on its signal page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import UserInputError
from core.records import InteractionRecord, SignalRecord, append_jsonl, read_jsonl

if TYPE_CHECKING:
    from core.interaction import Interaction
    from core.policy import Policy
    from simulators.profile import Profile

SIGNALS = "signals.jsonl"


def write_signals(run_dir: Path, arm: str, seed: int, step: int, indices: Sequence[int], signals: Sequence[dict]) -> None:
    """Append one record per interaction (``indices``) whose signal (``StepResult.signals``, same order) is not empty."""
    for index, signal in zip(indices, signals):
        if signal:
            append_jsonl(run_dir / SIGNALS, SignalRecord(arm=arm, seed=seed, index=index, step=step, **signal))


@dataclass
class SignalRow:
    label: str  # what kind of follow-up: complaint, satisfied, unrelated, neutral, or the user's own label
    followup: str
    advantage: list[float]


@dataclass
class SignalFigure:
    """One answer's per-token advantage under several follow-ups (rows), as ``hindsight signal`` draws it."""

    prompt: str
    answer: str
    tokens: list[str]
    rows: list[SignalRow]
    reference: str  # the advantage reference: neutral or plain
    model: str
    profile: str
    source: str  # where the answer came from: the command line, or run/arm/seed/index
    reference_followup: str | None = None  # the neutral reference's message (reference neutral)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["rows"] = [{**r, "advantage": [round(v, 4) for v in r["advantage"]]} for r in data["rows"]]
        return json.dumps(data, ensure_ascii=False)


def standard_followups(profile: Profile, prompt: str, answer: str, neutral_pool: Sequence[str], avoid: str | None) -> list[tuple[str, str]]:
    """(label, message): the profile's complaint (the first check the answer fails, else its first check's), a satisfied
    reply, an unrelated question and a neutral message (not ``avoid``: the neutral reference's own, whose row would be 0)."""
    from simulators.neutral import load_pool, pick_neutral
    from simulators.profile import pick

    if not profile.checks:
        raise UserInputError(f"profile {profile.name} has no checks, hence no complaint; pass --followup LABEL=TEXT instead")
    key = prompt + "\x00" + answer
    check = (profile.failures(answer) or profile.checks)[0]
    neutral = [m for m in neutral_pool if m != avoid] or list(neutral_pool)
    return [
        (f"complaint ({check.short()})", pick(check.followup, key)),
        ("satisfied", pick(profile.satisfied, key)),
        ("unrelated question", pick_neutral(load_pool("unrelated"), key, "signal")),
        ("neutral message", pick_neutral(neutral, key, "signal")),
    ]


def answer_interaction(policy: Policy, prompt: str, answer_ids: Sequence[int], system: str | None = None) -> Interaction:
    """An interaction holding ``prompt`` and the answer ``answer_ids`` (finished when it ends on end-of-turn), to score."""
    from core.engine import Generation
    from core.interaction import Followup, Interaction

    messages = policy.messages(prompt, system=system)
    ids = tuple(answer_ids)
    return Interaction(0, prompt, messages, policy.encode_chat(messages), Generation(policy.decode(ids), ids, bool(ids) and ids[-1] == policy.eos_token_id),
                       Followup("", ""))


def signal_figure(policy: Policy, trainer_config, prompt: str, answer_ids: Sequence[int], profile: Profile, extra: Sequence[tuple[str, str]] = (), *,
                  model: str, source: str, neutral_pool: Sequence[str], system: str | None = None) -> SignalFigure:
    """Score the answer under the standard follow-ups of ``profile`` and ``extra`` ones (label, message) with an SDPO trainer
    of ``trainer_config`` (nothing is updated)."""
    from trainers.sdpo import SDPOTrainer

    trainer = SDPOTrainer(policy, trainer_config, neutral_pool=neutral_pool)
    interaction = answer_interaction(policy, prompt, answer_ids, system)
    answer = interaction.response.text
    reference_followup = trainer.neutral_followup(interaction) if trainer_config.advantage_reference == "neutral" else None
    followups = [*standard_followups(profile, prompt, answer, neutral_pool, avoid=reference_followup), *extra]
    rows = trainer.token_advantages([interaction] * len(followups), [text for _, text in followups])
    tokens = [policy.tokenizer.decode([t]) for t in trainer.completion(interaction)]
    return SignalFigure(prompt, answer, tokens, [SignalRow(label, text, values) for (label, text), values in zip(followups, rows)],
                        trainer_config.advantage_reference, model, profile.name, source, reference_followup)


def pick_interaction(run_dir: Path, arm: str, seed: int | None, index: int | None) -> tuple[InteractionRecord, list[int] | None]:
    """An interaction of a run (``index``; default the first whose user complained) and its answer's token ids when
    signals.jsonl recorded them (else None: the answer text is tokenized again)."""
    records = [r for r in read_jsonl(run_dir / "interactions.jsonl", InteractionRecord) if r.arm == arm and (seed is None or r.seed == seed)]
    if not records:
        raise UserInputError(f"no {arm} interactions" + (f" of seed {seed}" if seed is not None else ""), path=run_dir / "interactions.jsonl")
    if index is None:
        chosen = next((r for r in records if r.satisfied is False), records[0])
    else:
        chosen = next((r for r in records if r.index == index), None)
        if chosen is None:
            raise UserInputError(f"no {arm} interaction with index {index} (0 to {max(r.index for r in records)})", path=run_dir / "interactions.jsonl")
    ids = next((s.ids for s in read_jsonl(run_dir / SIGNALS, SignalRecord) if (s.arm, s.seed, s.index) == (chosen.arm, chosen.seed, chosen.index)), None)
    return chosen, ids or None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "answer"


def draw(figure: SignalFigure, path: Path, width: int = 32) -> Path:
    """The heatmap: one row per follow-up, one column per answer token (``width`` tokens a band, bands stacked), one
    diverging colour scale centred on 0 for the whole figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    values = [row.advantage for row in figure.rows]
    limit = max((abs(v) for row in values for v in row), default=1.0) or 1.0
    norm = TwoSlopeNorm(0.0, -limit, limit)
    n = len(figure.tokens)
    bands = [range(a, min(a + width, n)) for a in range(0, n, width)] or [range(0)]
    size = (max(8.0, 0.33 * min(n, width) + 3.0), 1.2 + 0.18 * len(values) + len(bands) * (0.3 * len(values) + 0.75))
    fig, axes = plt.subplots(len(bands), 1, figsize=size, constrained_layout=True, squeeze=False)
    image = None
    for ax, band in zip(axes[:, 0], bands):
        image = ax.imshow([[row[c] for c in band] for row in values], aspect="auto", cmap="RdBu", norm=norm, interpolation="nearest")
        ax.set_xticks(range(len(band)), [_shown(figure.tokens[c]) for c in band], rotation=90, fontsize=8, family="monospace")
        ax.set_yticks(range(len(values)), [row.label.split(" (")[0] for row in figure.rows], fontsize=8)
        ax.tick_params(length=0)
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.015, pad=0.01, label="advantage A_t")
    ref = f"neutral reference ({_cut(figure.reference_followup or '', 40)!r})" if figure.reference == "neutral" else "plain reference"
    lines = [f"{_cut(figure.prompt, 100)}", f"{figure.model} · {ref} · profile {figure.profile} · answer from {figure.source}"]
    lines += [f"{row.label}: {_cut(row.followup, 70)!r}  (sum {sum(row.advantage):+.2f})" for row in figure.rows]
    fig.suptitle("\n".join(lines), fontsize=8.5, ha="left", x=0.01)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _shown(token: str) -> str:
    return token.replace("\n", "⏎").replace(" ", "·") or "∅"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
