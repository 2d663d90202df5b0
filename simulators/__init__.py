"""Simulated users: profiles (YAML) and the simulators that write follow-ups for them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulators.base import Followup, Simulator

if TYPE_CHECKING:
    from harness.config import SimulatorSettings

__all__ = ["Followup", "Simulator", "build_simulator"]


def build_simulator(settings: SimulatorSettings) -> Simulator:
    """The simulator named by ``settings.kind`` with its arguments (recorded in config.yaml)."""
    if settings.kind == "scripted":
        from simulators.scripted import ScriptedSimulator

        return ScriptedSimulator()
    if settings.kind == "complain":
        from simulators.scripted import ComplainingSimulator

        return ComplainingSimulator()
    if settings.kind == "llm":
        from harness.llm_client import LLMClient
        from simulators.llm import LLMSimulator

        return LLMSimulator(LLMClient(settings.llm))
    from simulators.local import LocalSimulator

    return LocalSimulator(settings.model, temperature=settings.temperature, max_tokens=settings.max_tokens)
