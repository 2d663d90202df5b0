"""The follow-up vocabulary (the RLHI paper's four types): what a user's next message is, relative to the request it follows.

- ``new_request``: the user moves on (a new topic, a different request, an unrelated input);
- ``reattempt_with_feedback``: the user asks again with a correction, a clarification or a complaint about the answer;
- ``reattempt_without_feedback``: the user repeats the request with nothing new (or just asks to regenerate);
- ``positive_feedback``: the user is pleased (thanks, praise) and asks for nothing more.

Classifiers live in ``judges/followup.py``; conversation logs, trainers, suites and run records share these names. Run
records written before the vocabulary was unified spell them ``new``, ``retry_feedback``, ``retry_no_feedback`` and
``positive``: ``followup_type`` reads either spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

FollowupType = Literal["new_request", "reattempt_with_feedback", "reattempt_without_feedback", "positive_feedback"]
FOLLOWUP_TYPES: tuple[FollowupType, ...] = get_args(FollowupType)


# the labels of the RLHI trainer's records before the vocabulary was unified
OLD_SPELLINGS: dict[str, FollowupType] = {"new": "new_request", "retry_feedback": "reattempt_with_feedback",
                                          "retry_no_feedback": "reattempt_without_feedback", "positive": "positive_feedback"}


def followup_type(label: str) -> FollowupType:
    """A follow-up type from its name or its old spelling; ValueError for anything else."""
    if label in FOLLOWUP_TYPES:
        return label  # type: ignore[return-value]
    if label in OLD_SPELLINGS:
        return OLD_SPELLINGS[label]
    raise ValueError(f"unknown follow-up type '{label}' (known: {', '.join(FOLLOWUP_TYPES)})")


@dataclass(frozen=True)
class FollowupCase:
    """One follow-up in context: the user's previous request, the assistant's answer to it, the user's next message, and
    (from a simulated user) whether the user said they were satisfied (None: unknown)."""

    request: str
    answer: str
    followup: str
    satisfied: bool | None = None


@dataclass(frozen=True)
class FollowupLabel:
    """A follow-up's type, who decided it (``heuristic (…)`` or the backend's name) and what that answered."""

    label: FollowupType
    source: str
    raw: str = ""


class FollowupClassifier(Protocol):
    name: str

    def classify(self, cases: Sequence[FollowupCase]) -> list[FollowupType]:
        """One type per case."""
        ...

    def judge(self, cases: Sequence[FollowupCase]) -> list[FollowupLabel]:
        """One type per case, with who decided it and its raw answer (for the records)."""
        ...
