"""Trainers: one update from a batch of interactions (SDPO now; pairwise DPO-style trainers share the protocol)."""

from trainers.base import StepResult, Trainer
from trainers.sdpo import SDPOConfig, SDPOTrainer

__all__ = ["SDPOConfig", "SDPOTrainer", "StepResult", "Trainer"]
