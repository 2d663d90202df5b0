"""One interaction: the prompt the policy answered, its answer, and the user's follow-up."""

from __future__ import annotations

from dataclasses import dataclass

from harness.engine import Generation
from harness.policy import Message
from harness.records import GuardDecision
from simulators.base import Followup


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
