"""One interaction: the prompt the policy answered, its answer, and the user's follow-up (written by a simulator or a real user)."""

from __future__ import annotations

from dataclasses import dataclass

from core.engine import Generation
from core.policy import Message
from core.records import GuardDecision


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


@dataclass
class Interaction:
    index: int  # 0-based position in the run's stream of interactions
    prompt: str
    messages: list[Message]  # what the policy saw (system + user turn)
    context_ids: list[int]  # ``messages`` rendered by the chat template
    response: Generation
    followup: Followup
    guard: GuardDecision | None = None  # the update guard's decision, set by the trainer and recorded in the run log

    def conversation(self) -> list[Message]:
        return [*self.messages, {"role": "assistant", "content": self.response.text}]
