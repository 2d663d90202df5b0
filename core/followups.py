"""The follow-up vocabulary (the RLHI paper's four types): what a user's next message is, relative to the request it follows.

- ``new_request``: the user moves on (a new topic, a different request, an unrelated input);
- ``reattempt_with_feedback``: the user asks again with a correction, a clarification or a complaint about the answer;
- ``reattempt_without_feedback``: the user repeats the request with nothing new (or just asks to regenerate);
- ``positive_feedback``: the user is pleased (thanks, praise) and asks for nothing more.

Classifiers live in ``judges/``; conversation logs, trainers and suites share these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

FollowupType = Literal["new_request", "reattempt_with_feedback", "reattempt_without_feedback", "positive_feedback"]
FOLLOWUP_TYPES: tuple[FollowupType, ...] = get_args(FollowupType)


@dataclass(frozen=True)
class FollowupCase:
    """One follow-up in context: the user's previous request, the assistant's answer to it, the user's next message."""

    request: str
    answer: str
    followup: str


class FollowupClassifier(Protocol):
    name: str

    def classify(self, cases: Sequence[FollowupCase]) -> list[FollowupType]: ...
