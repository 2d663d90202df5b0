"""The trainer protocol (one update from a batch of interactions) and the registry of trainer methods.

SDPO reads (prompt, answer, follow-up) directly; pairwise trainers (DPO from rewrites or ranked candidates)
build their pairs inside ``step`` from the same interactions, with the policy and engine they were given.

A method is one file with one registration: ``@METHODS.register("name", help=..., summary=...)`` on a factory that
takes ``TrainerInputs`` and returns a ``Trainer``; the loop builds it by ``RunConfig.method`` and uses only what the
protocol names. Registration info the experiment layer reads: ``help`` (the CLI and the config's description),
``summary`` (config → the report's one-line description of the method's settings) and ``guarded`` (the method has
the update guard that ``hindsight redteam`` compares).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from core.interaction import Interaction
from core.registry import Registry

if TYPE_CHECKING:
    from core.engine import Engine
    from core.policy import Policy
    from simulators.profile import Profile
    from trainers.guard import Guard


@dataclass
class StepResult:
    """What one update did: scalar metrics for the log, and one summary per interaction (same order)."""

    metrics: dict[str, float]
    per_interaction: list[dict] = field(default_factory=list)
    skipped: str | None = None  # why the update was not applied (e.g. a non-finite loss)
    signals: list[dict] = field(default_factory=list)  # per interaction (same order, {}: none): SignalRecord fields (core/records.py)


class Trainer(Protocol):
    """Everything the loop and the evaluation use of a trainer."""

    guard: Guard | None
    """The update guard deciding which follow-ups the trainer learns from (None: the method has none)."""

    persona: str | None
    """The persona the trainer currently holds (persona-guided evaluation reads it; None: none)."""

    def step(self, batch: Sequence[Interaction]) -> StepResult: ...

    def record_fields(self, summary: dict) -> dict:
        """The ``InteractionRecord`` fields that hold one interaction's summary (from ``StepResult.per_interaction``)."""
        ...

    def llm_parts(self) -> dict[str, list[object]]:
        """Per usage role (e.g. ``flagger``), the parts that may call an LLM (each holding its client as ``client`` or
        ``backend.client``), for the run's LLM usage accounting. Empty when none does."""
        ...

    def state_dict(self) -> dict:
        """Everything beyond the policy's weights that a resumed run needs to continue exactly (optimizer, counters):
        a nested dict of tensors and JSON values (harness/checkpoint.py stores it as safetensors + JSON)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class TrainerInputs:
    """What a method's factory gets for one arm of one seed."""

    config: Any  # the run's RunConfig (harness/config.py): the factory reads its method's settings there
    policy: Policy
    engine: Engine
    arm: str
    seed: int
    neutral_pool: Sequence[str]
    user_at: Callable[[int], Profile | None]  # the simulated user's profile at an interaction (None on the control arm)


METHODS: Registry[Trainer] = Registry("trainer method")
