"""Signs that an answer degenerated instead of doing the task: apology or meta openings, loops, empty or cut-off text.

These are the failure modes SDPO showed on a 135M model (answers opening "I'm sorry for the misunderstanding,
but as a chatbot…", repeated phrases). Each flag is a cheap text check; ``degenerate`` is their OR.

An answer cut at the token limit is flagged ``truncated`` and counts as degenerate only when asked
(``truncated_counts``): SmolLM2's untrained answers often run past any cap that CPU evaluation can afford, so
counting every long answer as degenerate would make the untrained model look broken and any shortening look
like a cure. Answers that loop until the cap are caught by the repetition checks either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.text import distinct, looping, repeated_fraction, words

APOLOGY = re.compile(r"(?i)^\W*(?:i'?m (?:so |very |truly )?sorry|i am (?:so |very )?sorry|sorry\b|i apologi[sz]e|my apologies|apologies\b)")
META = re.compile(
    r"(?i)\bas an? (?:ai|chatbot|language model|assistant|virtual assistant)\b|\bmisunderstanding\b|\bfuture (?:user )?message\b"
    r"|\buser prompt\b|\b(?:previous|last|earlier) (?:answer|response|reply|message)\b|\b(?:your|the) feedback\b"
    r"|\bthank you for (?:your|the) (?:message|feedback|clarification|patience)\b"
)


@dataclass(frozen=True)
class Degeneration:
    apology: bool
    meta: bool
    repetition: float  # repeated 4-gram fraction
    distinct2: float
    looping: bool
    empty: bool
    truncated: bool
    truncated_counts: bool = False

    @property
    def degenerate(self) -> bool:
        return self.apology or self.meta or self.looping or self.empty or (self.truncated and self.truncated_counts)

    def reasons(self) -> list[str]:
        return [name for name in ("apology", "meta", "looping", "empty", "truncated") if getattr(self, name)]


def assess(text: str, finished: bool = True, *, truncated_counts: bool = False, max_repetition: float = 0.2, min_distinct2: float = 0.6) -> Degeneration:
    """Flags for one answer; ``finished`` is False when generation hit its token limit."""
    tokens = words(text)
    return Degeneration(
        apology=bool(APOLOGY.search(text)),
        meta=bool(META.search(text)),
        repetition=repeated_fraction(tokens),
        distinct2=distinct(tokens),
        looping=looping(tokens, max_repetition, min_distinct2),
        empty=not tokens,
        truncated=not finished,
        truncated_counts=truncated_counts,
    )
