"""Trainers: one update from a batch of interactions. ``build_trainer`` picks the one ``config.method`` names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainers.base import StepResult, Trainer
from trainers.rlhi import METHOD_HELP, RECIPES, Method, RLHIConfig, RLHITrainer
from trainers.sdpo import SDPOConfig, SDPOTrainer

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.engine import Engine
    from harness.policy import Policy

__all__ = ["METHOD_HELP", "RECIPES", "Method", "RLHIConfig", "RLHITrainer", "SDPOConfig", "SDPOTrainer", "StepResult", "Trainer", "build_trainer"]


def build_trainer(config: RunConfig, policy: Policy, engine: Engine, *, arm: str, seed: int, neutral_pool: Sequence[str]) -> Trainer:
    """The trainer of ``config.method`` for one arm. RLHI trainers read the simulated user's profile at each interaction
    (persona source ``profile``, the rules reward) on the treated arm; a control arm's neutral user has none."""
    if config.method == "sdpo":
        return SDPOTrainer(policy, config.trainer_for(arm), seed=seed, neutral_pool=neutral_pool)
    from harness.schedule import build_schedule

    schedule = build_schedule(config)

    def user_at(index: int):
        return schedule.user_at(index) if arm != "control" else None

    return RLHITrainer(policy, engine, config.rlhi, config.method, config.generation.max_new_tokens or 96, user_at)
