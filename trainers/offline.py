"""Offline, off-policy SDPO (and the SFT ablation) over logged interaction tuples (history x, answer y, follow-up o).

The answers were written by other models (WildChat: GPT-3.5/4), so the paper optimizes a surrogate over the logged
tuples rather than an on-policy objective:

    L(θ) = −E_(x,y,o) [ mean_t sg(A_t) · log π_θ(y_t | x, y<t) ],   A_t = log π(y_t | H(x, o), y<t) − log π(y_t | B, y<t)

with the same hindsight prompt H as online SDPO, the reference context B (``advantage_reference``) = x (the paper) or H(x, neutral follow-up),
no centring, the end-of-turn token appended to y, and the first ``ignore_first_k`` answer tokens left out (the
paper's offline code: 2). ``method="sft"`` instead maximizes the likelihood of the logged answers (the paper's
sanity check, which hurt a strong instruct model).

One optimizer step covers ``batch_size`` tuples over all processes; each process runs its share in micro-batches,
accumulating gradients, and the loss is normalized by the global batch size, so N processes and one process take the
same step (up to float summation order). Gradients are averaged across processes by the engine accelerate wraps the
scorer in (DDP here; FSDP / DeepSpeed by accelerate's config).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.conversations import InteractionTuple
from core.followups import FollowupType
from core.policy import CompletionScorer, Policy
from core.yamlio import renamed_key
from simulators.neutral import load_pool, pick_neutral
from trainers import losses
from trainers.sdpo import PAPER_TEMPLATE

if TYPE_CHECKING:
    from accelerate import Accelerator


class OfflineConfig(BaseModel):
    """An offline trainer. Defaults are the SDPO paper's offline settings (Section 4.1, Table 5) except the batch size."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["sdpo", "sft"] = Field("sdpo", description="sdpo: the off-policy surrogate; sft: likelihood of the logged answers (an ablation)")
    lr: float = Field(2e-6, gt=0, description="peak AdamW learning rate")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="after warm-up: cosine decay to 0 at the last step, or constant")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of the steps spent warming up linearly")
    epochs: int = Field(2, ge=1, description="passes over the tuples (each shuffled by seed and epoch)")
    total_steps: int | None = Field(None, ge=1, description="the run's length in optimizer steps (default: epochs × full batches per epoch); the schedule spans it")
    batch_size: int = Field(8, ge=1, description="tuples per optimizer step over all processes (the paper: 32)")
    micro_batch: int = Field(4, ge=1, description="tuples per forward pass on one process; gradients accumulate over micro-batches")
    ignore_first_k: int = Field(2, ge=0, description="leave the first k answer tokens out of the SDPO loss")
    include_eos: bool = Field(True, description="append the end-of-turn token to each logged answer (not to one cut at max_completion_tokens)")
    max_prompt_tokens: int = Field(2048, ge=16, description="contexts longer than this keep their last tokens (the follow-up sits at the end of the hindsight prompt)")
    max_completion_tokens: int = Field(2048, ge=1, description="answers longer than this are cut")
    max_grad_norm: float = Field(10.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    advantage_reference: Literal["plain", "neutral"] = Field(
        "plain", description="the advantage's reference context B: 'plain' = the history alone (paper), 'neutral' = H(x, a neutral follow-up) "
        "(formerly 'baseline')")
    template: str = Field(PAPER_TEMPLATE, description="hindsight user turn; must contain {prompt} and {followup}")
    followup_types: list[FollowupType] | None = Field(None, description="train only on tuples whose follow-up has one of these types (None: all)")
    followup_weights: dict[FollowupType, float] = Field(default_factory=dict, description="per follow-up type, a weight on its tuples' loss (default 1)")
    seed: int = Field(0, description="data order (shuffled per epoch)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        return renamed_key(data, "baseline", "advantage_reference", "trainer")

    def model_post_init(self, _context: object) -> None:
        if "{prompt}" not in self.template or "{followup}" not in self.template:
            raise ValueError("template must contain {prompt} and {followup}")
        if any(w < 0 for w in self.followup_weights.values()):
            raise ValueError("followup_weights must be non-negative")

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based) of ``total``: linear warm-up that never uses lr 0, then
        cosine to 0 at ``total`` (or constant). Stateless, so a resumed run needs no scheduler state."""
        warmup = math.ceil(self.warmup_ratio * total)
        if step < warmup:
            return self.lr * (step + 1) / (warmup + 1)
        if self.schedule == "constant":
            return self.lr
        progress = (step - warmup) / max(1, total - warmup)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Encoded:
    """One tuple as token ids: student context, hindsight and reference contexts (SDPO), the answer, its loss weight."""

    context: list[int]
    hindsight: list[int] | None
    reference: list[int] | None
    answer: list[int]
    weight: float
    cut: bool  # the answer was longer than max_completion_tokens


class OfflineTrainer:
    """Optimizer steps over batches of tuples; see the module docstring. The caller (harness/train.py) shards batches."""

    def __init__(self, policy: Policy, config: OfflineConfig, accelerator: Accelerator, neutral_pool: Sequence[str] | None = None):
        self.policy, self.config, self.accelerator = policy, config, accelerator
        self.neutral_pool = tuple(neutral_pool) if neutral_pool is not None else (load_pool() if config.advantage_reference == "neutral" else ())
        self.params = [p for p in policy.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scorer, self.optimizer = accelerator.prepare(CompletionScorer(policy.model), optimizer)
        policy.device = accelerator.device

    # ----- state (optimizer only: the schedule is a function of the step) ----------------------------------------
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    # ----- data ----------------------------------------------------------------------------------------------
    def weight(self, t: InteractionTuple) -> float:
        return self.config.followup_weights.get(t.followup_type, 1.0) if t.followup_type else 1.0

    def encode(self, t: InteractionTuple) -> Encoded:
        cfg, policy = self.config, self.policy
        keep = cfg.max_prompt_tokens
        answer = policy.tokenizer.encode(t.answer, add_special_tokens=False)
        cut = len(answer) > cfg.max_completion_tokens
        answer = answer[: cfg.max_completion_tokens]
        if cfg.include_eos and not cut:
            answer.append(policy.eos_token_id)
        context = policy.encode_chat(t.history)[-keep:]
        hindsight = reference = None
        if cfg.method == "sdpo":
            hindsight = policy.encode_chat(self.hindsight_messages(t, t.followup))[-keep:]
            if cfg.advantage_reference == "neutral":
                neutral = pick_neutral(self.neutral_pool, f"{t.conversation}\x00{t.turn}", salt=f"offline-{cfg.seed}")
                reference = policy.encode_chat(self.hindsight_messages(t, neutral))[-keep:]
        return Encoded(context, hindsight, reference, answer, self.weight(t), cut)

    def hindsight_messages(self, t: InteractionTuple, followup: str) -> list[dict[str, str]]:
        """The history with its last user turn (the request) rewritten by the template around ``followup``."""
        *head, last = t.history
        return [*head, {"role": "user", "content": self.config.template.format(prompt=last["content"], followup=followup)}]

    # ----- one optimizer step ------------------------------------------------------------------------------
    def step(self, rows: Sequence[InteractionTuple], step: int, total: int, global_batch: int) -> tuple[dict[str, float], str | None]:
        """One optimizer step on this process's ``rows`` of a global batch of ``global_batch`` tuples.

        Returns (metrics over the whole global batch, why the step was skipped or None). A non-finite loss or gradient
        norm skips the update on every process alike and leaves weights and optimizer state untouched."""
        cfg, acc = self.config, self.accelerator
        lr = cfg.lr_at(step, total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(5, dtype=torch.float64)  # weighted loss, advantage·tokens, loss tokens, answer tokens, cut answers
        chunks = [rows[k : k + cfg.micro_batch] for k in range(0, len(rows), cfg.micro_batch)]
        for n, chunk in enumerate(chunks):
            sync = n == len(chunks) - 1
            with contextlib.nullcontext() if sync else acc.no_sync(self.scorer):
                encoded = [self.encode(t) for t in chunk]
                loss, parts = self._micro_loss(encoded)
                # each process averages over its share; the engine's all-reduce averages over processes → mean over the global batch
                acc.backward(loss * acc.num_processes / global_batch)
            sums += parts
        sums = acc.reduce(sums.to(acc.device), reduction="sum").cpu()
        grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        metrics = {"loss": float(sums[0] / global_batch), "grad_norm": grad_norm, "lr": lr, "answer_tokens": float(sums[3]), "cut_answers": float(sums[4])}
        if cfg.method == "sdpo":
            metrics["advantage_mean"] = float(sums[1] / sums[2].clamp(min=1))
        if not math.isfinite(metrics["loss"]) or not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return metrics, "non-finite loss" if not math.isfinite(metrics["loss"]) else "non-finite gradient"
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return metrics, None

    def _micro_loss(self, rows: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ weight·per-answer loss over ``rows``, [that sum, Σ advantage, loss tokens, answer tokens, cut answers])."""
        cfg, policy = self.config, self.policy
        contexts, answers = [r.context for r in rows], [r.answer for r in rows]
        weights = torch.tensor([r.weight for r in rows], dtype=torch.float32, device=policy.device)
        advantage_sum = 0.0
        if cfg.method == "sdpo":
            with torch.no_grad():
                teacher = policy.score([r.hindsight for r in rows], answers, scorer=self.scorer)
                base = policy.score([r.reference for r in rows], answers, scorer=self.scorer) if cfg.advantage_reference == "neutral" else None
            student = policy.score(contexts, answers, scorer=self.scorer)
            mask = student.mask.clone()
            mask[:, : cfg.ignore_first_k] = False
            reference = base.logprobs if base is not None else student.logprobs.detach()
            advantages = (teacher.logprobs - reference).masked_fill(~mask, 0.0)
            terms = losses.offline_surrogate(student.logprobs, advantages, mask)
            advantage_sum = float(advantages.sum())
        else:
            student = policy.score(contexts, answers, scorer=self.scorer)
            mask = student.mask
            terms = losses.nll(student.logprobs, mask)
        loss = (weights * terms).sum()
        parts = torch.tensor([float(loss.detach()), advantage_sum, float(mask.sum()), float(student.mask.sum()), float(sum(r.cut for r in rows))], dtype=torch.float64)
        return loss, parts
