"""Trainers: one update from a batch of interactions (SDPO, the RLHI methods and their ablations)."""

from __future__ import annotations

from trainers.base import StepResult, Trainer
from trainers.rlhi import METHOD_HELP, RECIPES, Method, RLHIConfig, RLHITrainer
from trainers.sdpo import SDPOConfig, SDPOTrainer

__all__ = ["METHOD_HELP", "RECIPES", "Method", "RLHIConfig", "RLHITrainer", "SDPOConfig", "SDPOTrainer", "StepResult", "Trainer"]
