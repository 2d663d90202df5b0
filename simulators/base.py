"""The simulator protocol: given conversations ending in the assistant's answer, write the user's next message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from core.interaction import Followup
from core.registry import Registry

if TYPE_CHECKING:
    from core.policy import Message
    from simulators.profile import Profile


class Simulator(Protocol):
    """Writes follow-ups for a batch of conversations, as the user described by ``profile``."""

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]: ...


# simulator kinds: a factory taking the run's ``SimulatorSettings`` (``settings``) per name; see simulators/__init__.py
SIMULATORS: Registry[Any] = Registry("simulator")


def last_turns(conversation: Sequence[Message]) -> tuple[str, str]:
    """The last user request and the assistant's answer to it."""
    if len(conversation) < 2 or conversation[-1]["role"] != "assistant" or conversation[-2]["role"] != "user":
        raise ValueError("a conversation for a simulator must end with a user turn and the assistant's answer")
    return conversation[-2]["content"], conversation[-1]["content"]
