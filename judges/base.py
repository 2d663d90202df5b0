"""The judge protocol: compare two responses to the same conversation, for an optional persona, with a typed verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from core.policy import Message

Winner = Literal["A", "B", "tie", "invalid"]


@dataclass(frozen=True)
class Pair:
    """Two responses to one conversation: a prompt, or the messages before the responses. A is the candidate, B the reference."""

    prompt: str | tuple[Message, ...]
    a: str
    b: str


@dataclass(frozen=True)
class Verdict:
    """Which response won, always in the caller's labels (A = ``Pair.a``).

    ``orders`` holds each judged order's winner mapped back to those labels (A shown first, then B shown first;
    one entry for an order-free judge) and ``raw`` the judge's text for each. ``backend`` names the judge.
    """

    winner: Winner
    orders: tuple[Winner, ...]
    raw: tuple[str, ...]
    backend: str


class Judge(Protocol):
    """Judges a batch of pairs; ``persona`` is the user whose preferences decide (None: a generic judgement)."""

    name: str

    def compare(self, pairs: Sequence[Pair], persona: str | None = None) -> list[Verdict]: ...
