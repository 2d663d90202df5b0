"""One optimizer step on preference pairs: sigmoid DPO against the frozen initial policy, or SFT on the chosen side.

A pair holds the context both responses are scored in (for the RLHI methods: the persona in the system prompt, then
the request) and the two responses' token ids. DPO scores both sides under the current policy (with gradient) and
under the frozen reference ``policy.initial()`` (the snapshot taken before the first update, or the base model with
the LoRA adapter switched off), and applies ``losses.dpo_loss``; SFT applies ``losses.nll_loss`` to the chosen side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from core.policy import Policy
from trainers import losses

Objective = Literal["dpo", "sft"]


@dataclass(frozen=True)
class PreferencePair:
    context_ids: list[int]
    chosen: list[int]
    rejected: list[int]


@dataclass(frozen=True)
class Update:
    """What one step did: metrics for the log, or why nothing was applied (``skipped``)."""

    metrics: dict[str, float]
    skipped: str | None = None
    weights: tuple[float, ...] = ()  # per pair, the gradient weight on each chosen token's log-prob (rejected: its negative under DPO)


class PreferenceOptimizer:
    """AdamW over the policy's trainable weights, stepping on DPO or SFT losses with gradient clipping and a finite-check."""

    def __init__(self, policy: Policy, lr: float, beta: float, max_grad_norm: float = 1.0, weight_decay: float = 0.0):
        self.policy = policy
        self.beta = beta
        self.max_grad_norm = max_grad_norm
        params = [p for p in policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def update(self, pairs: Sequence[PreferencePair], objective: Objective) -> Update:
        if not pairs:
            return Update({"pairs": 0.0}, skipped="no preference pair kept")
        loss, metrics, weights = self._dpo(pairs) if objective == "dpo" else self._sft(pairs)
        metrics["pairs"] = float(len(pairs))
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            return Update({**metrics, "loss": loss.item()}, skipped="non-finite loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.max_grad_norm)
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return Update({**metrics, "loss": loss.item(), "grad_norm": grad_norm.item()}, skipped="non-finite gradient")
        self.optimizer.step()
        return Update({**metrics, "loss": loss.item(), "grad_norm": grad_norm.item()}, weights=weights)

    def sequence_logprobs(self, pairs: Sequence[PreferencePair], policy: Policy) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(y⁺ | x) and log π(y⁻ | x) for every pair, in one batch."""
        contexts = [p.context_ids for p in pairs] * 2
        completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        scored = policy.score(contexts, completions)
        total = losses.sequence_logprob(scored.logprobs, scored.mask)
        return total[: len(pairs)], total[len(pairs) :]

    def _dpo(self, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, dict[str, float], tuple[float, ...]]:
        with torch.no_grad(), self.policy.initial() as reference:
            ref_chosen, ref_rejected = self.sequence_logprobs(pairs, reference)
        chosen, rejected = self.sequence_logprobs(pairs, self.policy)
        loss, chosen_reward, rejected_reward = losses.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.beta)
        margin = chosen_reward - rejected_reward
        weights = tuple((self.beta * torch.sigmoid(-margin) / len(pairs)).tolist())  # −∂loss/∂log π(y⁺_t)
        return loss, {
            "chosen_reward": chosen_reward.mean().item(),
            "rejected_reward": rejected_reward.mean().item(),
            "margin": margin.mean().item(),
            "accuracy": (margin > 0).float().mean().item(),
        }, weights

    def _sft(self, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, dict[str, float], tuple[float, ...]]:
        scored = self.policy.score([p.context_ids for p in pairs], [p.chosen for p in pairs])
        weights = tuple(1 / (len(p.chosen) * len(pairs)) for p in pairs)
        return losses.nll_loss(scored.logprobs, scored.mask), {"chosen_tokens": float(scored.mask.sum())}, weights
