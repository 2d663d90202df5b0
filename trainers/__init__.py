"""Trainers: one update from a batch of interactions (SDPO, the RLHI methods and their ablation methods).

``METHODS`` (trainers/base.py) is the registry of methods: a new one is one file whose factory carries one
``@METHODS.register("name", help=..., summary=...)`` line, imported below.
"""

from __future__ import annotations

from typing import Literal

from trainers import rlhi, sdpo  # noqa: F401  (each registers its methods)
from trainers.base import METHODS, StepResult, Trainer, TrainerInputs
from trainers.rlhi import RECIPES, RLHIConfig, RLHITrainer
from trainers.sdpo import SDPOConfig, SDPOTrainer

__all__ = ["METHODS", "METHOD_HELP", "RECIPES", "Method", "RLHIConfig", "RLHITrainer", "SDPOConfig", "SDPOTrainer", "StepResult", "Trainer",
           "TrainerInputs", "build_trainer", "method_help"]

# the built-in methods (for typing and the CLI's choices); RunConfig validates against METHODS, so registered ones are valid too
Method = Literal["sdpo", "rlhi-rewrite", "rlhi-reward", "rewrite-scratch", "rewrite-nofilter", "reward-agnostic", "sft", "sft-reward"]


def method_help() -> str:
    """One line per registered method: its name and help."""
    return "; ".join(f"{name}: {METHODS.info(name).get('help', '')}" for name in METHODS.names())


METHOD_HELP = method_help()


def build_trainer(inputs: TrainerInputs) -> Trainer:
    """The trainer of ``inputs.config.method``, built through the registry (which records the method on it)."""
    return METHODS.create(inputs.config.method, inputs=inputs)
