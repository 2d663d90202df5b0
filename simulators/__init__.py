"""Simulated users: profiles (YAML) and the simulators that write follow-ups for them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.interaction import Followup
from core.llm_client import LLMSettings, check_backend
from simulators.base import Simulator

__all__ = ["Followup", "Simulator", "SimulatorSettings", "build_simulator"]


class SimulatorSettings(BaseModel):
    """Who writes the follow-ups: the profile's scripted rules, an LLM through litellm, or a local model.

    ``complain`` is a diagnostic user who complains (with the profile's own complaints) whatever the answer.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["scripted", "complain", "llm", "local"] = "scripted"
    llm: LLMSettings | None = Field(None, description="for kind=llm")
    model: str | None = Field(None, description="for kind=local: a model spec (embedded alias, folder, .gguf, hub id)")
    temperature: float = Field(0.7, ge=0, description="for kind=local")
    max_tokens: int = Field(64, ge=1, description="for kind=local")

    @model_validator(mode="after")
    def _complete(self) -> SimulatorSettings:
        return check_backend(self, "simulator", model_flag="--simulator-model", base_flag="--api-base")


def build_simulator(settings: SimulatorSettings) -> Simulator:
    """The simulator named by ``settings.kind`` with its arguments (recorded in config.yaml)."""
    if settings.kind == "scripted":
        from simulators.scripted import ScriptedSimulator

        return ScriptedSimulator()
    if settings.kind == "complain":
        from simulators.scripted import ComplainingSimulator

        return ComplainingSimulator()
    if settings.kind == "llm":
        from core.llm_client import LLMClient
        from simulators.llm import LLMSimulator

        return LLMSimulator(LLMClient(settings.llm))
    from simulators.local import LocalSimulator

    return LocalSimulator(settings.model, temperature=settings.temperature, max_tokens=settings.max_tokens)
