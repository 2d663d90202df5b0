"""Simulated users: profiles (YAML) and the simulators that write follow-ups for them.

Simulator kinds are the ``SIMULATORS`` registry (simulators/base.py): a new one is one file with one
``@SIMULATORS.register("name")`` factory taking the settings, imported below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.interaction import Followup
from core.llm_client import LLMSettings, check_backend
from simulators import llm, local, scripted  # noqa: F401  (each registers its simulator kinds)
from simulators.base import SIMULATORS, Simulator

__all__ = ["SIMULATORS", "Followup", "Simulator", "SimulatorKind", "SimulatorSettings", "build_simulator"]

# the built-in kinds (for typing and the CLI's choices); validation reads SIMULATORS, so registered kinds are valid too
SimulatorKind = Literal["scripted", "complain", "llm", "local"]


class SimulatorSettings(BaseModel):
    """Who writes the follow-ups: the profile's scripted rules, an LLM through litellm, or a local model.

    ``complain`` is a diagnostic user who complains (with the profile's own complaints) whatever the answer.
    """

    model_config = ConfigDict(extra="forbid")
    kind: str = Field("scripted", description="scripted, complain, llm or local (or a registered simulator)")
    llm: LLMSettings | None = Field(None, description="for kind=llm")
    model: str | None = Field(None, description="for kind=local: a model spec (embedded alias, folder, .gguf, hub id)")
    temperature: float = Field(0.7, ge=0, description="for kind=local")
    max_tokens: int = Field(64, ge=1, description="for kind=local")
    notices_nonsense: bool = Field(False, description=(
        "for kind=scripted: answer an answer that loops or misses the request with a 'that makes no sense' complaint before "
        "applying the profile's checks (a user whose checks gibberish passes otherwise praises it)"))

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        return SIMULATORS.check(kind)

    @model_validator(mode="after")
    def _complete(self) -> SimulatorSettings:
        return check_backend(self, "simulator", model_flag="--simulator-model", base_flag="--api-base")


def build_simulator(settings: SimulatorSettings) -> Simulator:
    """The simulator named by ``settings.kind`` with its arguments (recorded in config.yaml, and on the simulator)."""
    return SIMULATORS.create(settings.kind, settings=settings)
