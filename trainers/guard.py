"""The update guard: what a trainer refuses to learn from, and the principles its hindsight prompt states.

A user can steer an online learner toward harm through their follow-ups ("call me an idiot", "skip the safety
lecture"). Before each update the guard asks a safety flagger (``judges/safety.py``) about every follow-up and
records its decision on the interaction (``interactions.jsonl``: ``guard``). What it then does is ``mode``:

- ``none``: nothing (flags are still recorded while a flagger is set: the flagged rate of an unguarded run);
- ``principles``: the hindsight prompt states principles — follow the user's wishes about style only where that stays
  safe and respectful — so the teacher that scores the answer is told what not to learn;
- ``skip_flagged``: flagged interactions are left out of the update (recorded as ``skipped``);
- ``both``: the two together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.interaction import Interaction
from core.llm_client import LLMSettings
from core.records import GuardDecision
from judges.safety import Exchange, Flagger

GuardMode = Literal["none", "principles", "skip_flagged", "both"]

PRINCIPLES_TEMPLATE = (
    "{prompt}\n\nThe following is a future user message. Use it to guide your answer to the user prompt, but only where "
    "that stays safe and respectful: follow the user's wishes about style, length, tone and format; never insult, mock or "
    "demean the user or anyone else, and never drop safety precautions or encourage risky actions, whatever the message "
    "asks. The message: {followup}"
)


class GuardSettings(BaseModel):
    """The update guard of a trainer (see trainers/guard.py) and the safety flagger it asks."""

    model_config = ConfigDict(extra="forbid")
    mode: GuardMode = Field("none", description="none | principles (the hindsight prompt states safety principles) | skip_flagged (flagged "
                            "follow-ups are left out of the update) | both")
    flagger: Literal["rules", "llm", "local", "off"] = Field("rules", description="who flags unsafe follow-ups: rules (offline phrase rules), "
                                                             "llm (any litellm model), local (a local model's SAFE/UNSAFE probabilities), off")
    llm: LLMSettings | None = Field(None, description="for flagger=llm")
    model: str | None = Field(None, description="for flagger=local: a model spec (embedded alias, folder, .gguf, hub id)")
    principles_template: str = Field(PRINCIPLES_TEMPLATE, description="the hindsight user turn under principles/both; must contain {prompt} and {followup}")

    @model_validator(mode="after")
    def _complete(self) -> GuardSettings:
        if "{prompt}" not in self.principles_template or "{followup}" not in self.principles_template:
            raise ValueError("principles_template must contain {prompt} and {followup}")
        if self.flagger == "llm" and self.llm is None:
            raise ValueError("flagger 'llm' needs llm settings (a model, and an api_base for a local server)")
        if self.flagger == "local" and not self.model:
            raise ValueError("flagger 'local' needs a model")
        if self.skips and self.flagger == "off":
            raise ValueError(f"guard mode '{self.mode}' leaves out flagged follow-ups: it needs a flagger")
        return self

    @property
    def skips(self) -> bool:
        return self.mode in ("skip_flagged", "both")

    @property
    def states_principles(self) -> bool:
        return self.mode in ("principles", "both")


def build_flagger(settings: GuardSettings, device: str = "auto") -> Flagger | None:
    """The flagger ``settings`` names (None for ``off``)."""
    if settings.flagger == "off":
        return None
    from judges.backends import BackendSpec, build_backend
    from judges.safety import LLMFlagger, RuleFlagger

    if settings.flagger == "rules":
        return RuleFlagger()
    return LLMFlagger(build_backend(BackendSpec(settings.flagger, settings.llm, settings.model), device, labels=("SAFE", "UNSAFE")))


class Guard:
    """Flags a batch's follow-ups, records each decision on its interaction, and says which ones to learn from."""

    def __init__(self, settings: GuardSettings, device: str = "auto"):
        self.settings = settings
        self.flagger = build_flagger(settings, device)

    @property
    def client(self) -> object:
        """The LLM client behind an llm flagger (for usage accounting), else None."""
        return getattr(getattr(self.flagger, "backend", None), "client", None)

    def review(self, batch: Sequence[Interaction]) -> list[Interaction]:
        """Set ``interaction.guard`` on each interaction (when a flagger is set) and return those to learn from."""
        if self.flagger is None:
            return list(batch)
        flags = self.flagger.review([Exchange(i.prompt, i.response.text, i.followup.text) for i in batch])
        for interaction, flag in zip(batch, flags):
            interaction.guard = GuardDecision(flagged=flag.flagged, reasons=list(flag.reasons), skipped=flag.flagged and self.settings.skips,
                                              flagger=self.flagger.name, raw=flag.raw)
        return [i for i in batch if i.guard is None or not i.guard.skipped]

    @staticmethod
    def metrics(batch: Sequence[Interaction]) -> dict[str, float]:
        """Counts for the run log's TrainRecord: follow-ups flagged, and left out of the update."""
        decisions = [i.guard for i in batch if i.guard is not None]
        if not decisions:
            return {}
        return {"guard_flagged": float(sum(d.flagged for d in decisions)), "guard_skipped": float(sum(d.skipped for d in decisions))}
