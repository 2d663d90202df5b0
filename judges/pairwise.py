"""The pairwise persona judge: which of two responses would this user prefer, asked in both orders, parsed strictly.

Each pair is judged with A shown first, then again with the two swapped (that verdict is mapped back); when the
two orders disagree the pair is a tie, which cancels position bias. A reply that is not exactly A, B or TIE is
invalid: counted and reported, never scored as a loss, and it makes the pair invalid.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

from core.policy import Message
from core.records import WinRate
from core.stats import bootstrap_ci
from judges.backends import JudgeBackend
from judges.base import Pair, Verdict, Winner

SYSTEM_PERSONA = """You compare two replies an AI assistant could give, on behalf of one particular user.

This user describes what they want from answers as follows:
{persona}

Decide which reply this user would prefer, going only by the preferences they state above. Ignore your own taste, \
the replies' length and their order unless the user's preferences make them matter. If neither reply suits this user \
better than the other, call it a tie.

Answer with exactly one of: A, B, TIE. Write nothing else."""

SYSTEM_GENERIC = """You compare two replies an AI assistant could give to the same request.

Decide which reply answers the request better. Ignore the replies' length and their order. If neither is better, call it a tie.

Answer with exactly one of: A, B, TIE. Write nothing else."""

USER = """The conversation so far:
{conversation}

Reply A:
<<<
{a}
>>>

Reply B:
<<<
{b}
>>>

Which reply would {who} prefer? Answer A, B or TIE."""

_PREFIX = re.compile(r"(?i)^(?:answer|verdict)\s*:\s*")
_MARKUP = re.compile(r"[*_`]")
_EDGES = string.whitespace + string.punctuation


def render_conversation(prompt: str | Sequence[Message]) -> str:
    if isinstance(prompt, str):
        return prompt.strip()
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content'].strip()}" for m in prompt)


def judge_messages(prompt: str | Sequence[Message], a: str, b: str, persona: str | None = None, system: str | None = None) -> list[Message]:
    """The judge's chat: the persona (if any) in the system message, the conversation and both replies in the user turn.

    ``system`` replaces the default instructions (a template with ``{persona}`` when a persona is given)."""
    template = system or (SYSTEM_PERSONA if persona else SYSTEM_GENERIC)
    system = template.format(persona=persona.strip()) if persona else template
    who = "this user" if persona else "a careful reader"
    user = USER.format(conversation=render_conversation(prompt), a=a.strip(), b=b.strip(), who=who)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> Winner:
    """A, B or tie when the whole reply is one of them (case, surrounding punctuation, bold and a leading
    'Answer:'/'Verdict:' aside); anything else, including 'BOTH' or 'I think A', is invalid."""
    core = _PREFIX.sub("", _MARKUP.sub("", text).strip(_EDGES)).strip(_EDGES).upper()
    return {"A": "A", "B": "B", "TIE": "tie"}.get(core, "invalid")


def _swap(winner: Winner) -> Winner:
    return {"A": "B", "B": "A"}.get(winner, winner)  # type: ignore[return-value]


def combine(first: Winner, second: Winner) -> Winner:
    """Both orders' winners in the caller's labels → the pair's: invalid if either is, the shared one, else a tie."""
    if "invalid" in (first, second):
        return "invalid"
    return first if first == second else "tie"


class PairwiseJudge:
    """Judges each pair in both orders with any ``JudgeBackend``; ``system`` replaces the default instructions (see judge_messages)."""

    def __init__(self, backend: JudgeBackend, system: str | None = None, name: str = "pairwise"):
        self.backend = backend
        self.system = system
        self.name = f"{name}:{backend.name}"

    def compare(self, pairs: Sequence[Pair], persona: str | None = None) -> list[Verdict]:
        return self.compare_each(pairs, [persona] * len(pairs))

    def compare_each(self, pairs: Sequence[Pair], personas: Sequence[str | None]) -> list[Verdict]:
        """``compare`` with each pair's own persona, all prompts in one backend call (an LLM backend sends them concurrently)."""
        prompts = [judge_messages(p.prompt, x, y, persona, self.system) for p, persona in zip(pairs, personas, strict=True)
                   for x, y in ((p.a, p.b), (p.b, p.a))]
        replies = self.backend.answer(prompts)
        out = []
        for first, second in zip(replies[0::2], replies[1::2]):
            orders = (parse_verdict(first.text), _swap(parse_verdict(second.text)))
            out.append(Verdict(winner=combine(*orders), orders=orders, raw=(first.describe(), second.describe()), backend=self.backend.name))
        return out


_SCORE = {"A": 1.0, "tie": 0.5, "B": 0.0, "invalid": None}


def summarize(verdicts: Sequence[Verdict], *, resamples: int = 2000, seed: int = 0) -> WinRate:
    counts = {w: sum(v.winner == w for v in verdicts) for w in ("A", "B", "tie", "invalid")}
    wins, losses, ties, invalid = counts["A"], counts["B"], counts["tie"], counts["invalid"]
    valid = wins + losses + ties
    low, high = bootstrap_ci([_SCORE[v.winner] for v in verdicts], resamples=resamples, seed=seed) or (None, None)
    swapped = [v.orders for v in verdicts if len(v.orders) == 2 and "invalid" not in v.orders]
    return WinRate(
        n=len(verdicts),
        wins=wins,
        losses=losses,
        ties=ties,
        invalid=invalid,
        win_rate=(wins + ties / 2) / valid if valid else None,
        decisive=wins / (wins + losses) if wins + losses else None,
        win_low=low,
        win_high=high,
        swap_agreement=sum(a == b for a, b in swapped) / len(swapped) if swapped else None,
        invalid_rate=invalid / len(verdicts) if verdicts else 0.0,
    )


COLUMNS = ("win rate [95% CI]", "wins", "losses", "ties", "invalid", "decisive", "swap agreement", "invalid rate")


def cells(r: WinRate) -> list[str]:
    """One summary as table cells under ``COLUMNS`` ("–" where a rate is undefined)."""
    rate = _fmt(r.win_rate) + (f" [{r.win_low:.2f}, {r.win_high:.2f}]" if r.win_rate is not None and r.win_low is not None else "")
    return [rate, str(r.wins), str(r.losses), str(r.ties), str(r.invalid), _fmt(r.decisive), _fmt(r.swap_agreement), _fmt(r.invalid_rate)]


def markdown_table(label: str, results: Mapping[str, WinRate]) -> list[str]:
    """Summaries as markdown table lines, one row per key of ``results`` under the column ``label``."""
    return [f"| {label} | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|",
            *(f"| {name} | " + " | ".join(cells(r)) + " |" for name, r in results.items())]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
