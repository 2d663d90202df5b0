"""The simulator protocol: given conversations ending in the assistant's answer, write the user's next message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from harness.policy import Message
    from simulators.profile import Profile


@dataclass(frozen=True)
class Followup:
    """The user's next message, the simulator's raw output, and whether it was a satisfied reply (None: unknown).

    ``failed`` says why there is no message (the simulator's LLM still failed after its retries); such an
    interaction is recorded and left out of the update.
    """

    text: str
    raw: str
    satisfied: bool | None = None
    failed: str | None = None


class Simulator(Protocol):
    """Writes follow-ups for a batch of conversations, as the user described by ``profile``."""

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]: ...


def last_turns(conversation: Sequence[Message]) -> tuple[str, str]:
    """The last user request and the assistant's answer to it."""
    if len(conversation) < 2 or conversation[-1]["role"] != "assistant" or conversation[-2]["role"] != "user":
        raise ValueError("a conversation for a simulator must end with a user turn and the assistant's answer")
    return conversation[-2]["content"], conversation[-1]["content"]
