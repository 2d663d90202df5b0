"""The trainer protocol: one update from a batch of interactions.

SDPO reads (prompt, answer, follow-up) directly; pairwise trainers (DPO from rewrites or ranked candidates)
build their pairs inside ``step`` from the same interactions, with the policy and engine they were given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.interaction import Interaction


@dataclass
class StepResult:
    """What one update did: scalar metrics for the log, and one summary per interaction (same order)."""

    metrics: dict[str, float]
    per_interaction: list[dict] = field(default_factory=list)
    skipped: str | None = None  # why the update was not applied (e.g. a non-finite loss)


class Trainer(Protocol):
    def step(self, batch: Sequence[Interaction]) -> StepResult: ...

    def state_dict(self) -> dict:
        """Everything beyond the policy's weights that a resumed run needs to continue exactly (optimizer, counters):
        a nested dict of tensors and JSON values (harness/checkpoint.py stores it as safetensors + JSON)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...
