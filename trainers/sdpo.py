"""Online SDPO: self-distillation from the user's follow-up.

The policy answered x with y and the user replied o. The same model re-scores y under a hindsight prompt
H(x, o) that shows o; the per-token advantage is

    A_t = log π(y_t | H(x, o), y<t) − log π(y_t | B, y<t)          (both sides detached)

where the reference context B (``advantage_reference``) is the plain prompt x (the paper) or, with ``"neutral"``,
the same hindsight prompt filled with a neutral follow-up o_n, H(x, o_n). On a small model the hindsight prompt itself
pulls answers (shorter, apologetic) whatever the user said; the neutral reference cancels that pull so only
what the user said remains, at the cost of one more no-grad forward.

The teacher (``teacher``) is the model that scores the hindsight and neutral prompts: the live policy (the paper), an
exponential moving average of its trainable weights (TRL's default; swapped into the model for those forwards, kept in
the trainer's state so a resumed run continues exactly), or the untrained policy. ``full_kl`` and ``topk_kl`` take TRL's
divergence α (trainers/losses.py ``divergence``).

The update guard (``guard``, trainers/guard.py) decides what the trainer learns from: it flags unsafe follow-ups,
can leave them out of the update, and can swap the template for one that states safety principles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.interaction import Interaction
from core.policy import Policy
from core.yamlio import renamed_key
from simulators.neutral import load_pool, pick_neutral
from trainers import losses
from trainers.base import METHODS, StepResult, TrainerInputs
from trainers.guard import Guard, GuardSettings

PAPER_TEMPLATE = "{prompt}\n\nThe following is a future user message. Use this to guide your answer to the user prompt: {followup}"


class SDPOConfig(BaseModel):
    """Everything that defines an SDPO update. Defaults are chosen from the evidence in docs/experiments.md."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(2e-5, gt=0, description="AdamW learning rate (constant unless lr_from changes it)")
    lr_from: dict[int, float] = Field({}, description=(
        "a piecewise-constant learning rate: from interaction k on, the value at the largest key ≤ k (before the first key: lr); e.g. "
        "{64: 6e-5} triples it at a flip at 64, so that the policy walks back the distance it went under the first preference faster"))
    loss: Literal["sampled_token", "full_kl", "topk_kl"] = Field(
        "sampled_token",
        description=(
            "sampled_token: policy gradient with the per-token advantage A_t on the sampled tokens (the paper's choice); "
            "full_kl: the divergence ``alpha`` (reverse KL(π_θ ‖ q) by default) over the whole vocabulary at each answer position, "
            "q ∝ π_θ·π(·|H(o))/π(·|B); "
            "topk_kl: the same over the student's top-k tokens plus one bucket for the rest"
        ),
    )
    advantage_reference: Literal["neutral", "plain"] = Field(
        "neutral", description="the advantage's reference context B: 'plain' = the prompt without follow-up (paper), 'neutral' = H(x, neutral "
        "follow-up) (formerly 'baseline')"
    )
    template: str = Field(PAPER_TEMPLATE, description="hindsight user turn; must contain {prompt} and {followup}")
    centre: bool = Field(False, description="subtract each answer's mean advantage (sampled_token only)")
    clip_eps: float | None = Field(0.2, gt=0, description="PPO ratio clipping ε (only bites when epochs > 1)")
    epochs: int = Field(1, ge=1, description="updates per batch of interactions")
    kl_anchor: float = Field(0.0, ge=0, description=(
        "β of a KL penalty to the initial policy π_0: k3 on the sampled tokens (sampled_token), the exact reverse KL(π_θ ‖ π_0) over the "
        "vocabulary (full_kl, topk_kl). Under the vocabulary losses the update's fixed point is then π_0·(π(·|H(o))/π(·|B))^(1/β): "
        "β = 1 distills what the model would say knowing the follow-up, where β = 0 re-applies that tilt at every step, "
        "without end (tests/trainers/test_losses.py)"))
    ignore_first_k: int = Field(0, ge=0, description="leave the first k answer tokens out of the loss")
    positions: int | None = Field(None, ge=1, description=(
        "train each answer only at the k positions where the follow-up pulls hardest (KL(q ‖ π_θ) under full_kl/topk_kl, |A_t| under "
        "sampled_token); None: every position. A follow-up that asks to add something ('more emojis') tilts every position toward it, "
        "and repeated updates turn whole answers into it; confined, the update changes the few places the follow-up is about"))
    advantage_clip: float | None = Field(None, gt=0, description="clamp each token's advantage to [-c, c] (tames single-token spikes)")
    include_eos: bool = Field(True, description="train on the end-of-turn token when the answer emitted it")
    cut_eos: bool = Field(False, description=(
        "after an answer cut at the token cap, score and train an end-of-turn token as if the answer had stopped there: its A_t says "
        "whether the follow-up wants the answer to stop at that point ('too long': yes, 'too short': no), where a cut answer otherwise "
        "gives end-of-turn no signal (the one token of the update the policy did not sample)"))
    topk: int = Field(20, ge=1, description="k for loss=topk_kl")
    alpha: float = Field(1.0, ge=0, le=1, description=(
        "the divergence of full_kl and topk_kl, TRL's distillation_alpha: 0 = forward KL(q ‖ π_θ) (mass-covering: raises what the teacher "
        "likes and the student rarely says), 1 = reverse KL(π_θ ‖ q) (the default), between them the generalized JSD with mixture "
        "m = (1−α)·π_θ + α·q (0.5: JSD; it shrinks towards 0 near either end); sampled_token needs 1"))
    teacher: Literal["live", "ema", "initial"] = Field("live", description=(
        "the weights that score the hindsight (and neutral) prompts: 'live' = the current policy (the paper), 'ema' = an exponential moving "
        "average of the policy's trainable weights (TRL's default teacher; one more copy of them in memory: the whole model, or only the "
        "adapter under LoRA), 'initial' = the untrained policy (TRL's 'base')"))
    ema_rate: float = Field(0.05, gt=0, le=1,
                            description="teacher=ema: after each optimizer step ema ← (1 − rate)·ema + rate·θ (TRL's teacher_update_rate)")
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    learn_from: Literal["all", "complaints"] = Field("all", description=(
        "which follow-ups the update learns from: all, or complaints only (a follow-up the user marked satisfied, as a scripted or LLM "
        "user does, is left out; unknown counts as a complaint). Praise carries no correction: its tilt re-amplifies whatever was "
        "sampled, which on a satisfied user's answers is drift (docs/experiments.md §12)"))
    guard: GuardSettings = Field(GuardSettings(), description="the update guard: safety flags on follow-ups, principles, skipping flagged ones")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        return renamed_key(data, "baseline", "advantage_reference", "trainer")

    def lr_at(self, interaction: int) -> float:
        """The learning rate of an update whose batch starts at ``interaction``."""
        return next((self.lr_from[k] for k in sorted(self.lr_from, reverse=True) if k <= interaction), self.lr)

    def model_post_init(self, _context: object) -> None:
        if any(k < 0 or v <= 0 for k, v in self.lr_from.items()):
            raise ValueError(f"lr_from maps interactions (≥ 0) to learning rates (> 0); got {self.lr_from}")
        if "{prompt}" not in self.template or "{followup}" not in self.template:
            raise ValueError("template must contain {prompt} and {followup}")
        if self.alpha != 1 and self.loss == "sampled_token":
            raise ValueError(f"alpha {self.alpha:g} needs loss full_kl or topk_kl: the sampled-token loss is the reverse KL (alpha 1) only")


class SDPOTrainer:
    """One SDPO update per batch of interactions; see the module docstring for the advantage."""

    def __init__(self, policy: Policy, config: SDPOConfig, seed: int = 0, neutral_pool: Sequence[str] | None = None):
        self.policy = policy
        self.config = config
        self.seed = seed
        self.neutral_pool = tuple(neutral_pool) if neutral_pool is not None else load_pool()
        if config.kl_anchor > 0 or config.teacher == "initial":
            policy.snapshot_initial()  # the anchor (and teacher) is the policy as it was before this trainer's first update
        self.params = [p for p in policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.ema = [p.detach().clone() for p in self.params] if config.teacher == "ema" else None
        self.guard: Guard | None = Guard(config.guard, device=policy.settings.device)
        self.template = config.guard.principles_template if config.guard.states_principles else config.template
        self.persona: str | None = None  # SDPO holds no persona
        self.last_advantages: dict[int, list[float]] = {}  # id(interaction) -> A_t per answer token, of the last step's update

    def record_fields(self, summary: dict) -> dict:
        return {"advantage": summary}

    def llm_parts(self) -> dict[str, list[object]]:
        return {"flagger": [self.guard]}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), **({"ema": self.ema} if self.ema is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            for mine, saved in zip(self.ema, state["ema"], strict=True):
                mine.copy_(saved)

    @contextlib.contextmanager
    def teacher(self) -> Iterator[Policy]:
        """The policy that scores the hindsight prompts (``config.teacher``); the EMA weights are swapped in for the duration."""
        if self.config.teacher == "initial":
            with self.policy.initial() as initial:
                yield initial
            return
        if self.ema is None:
            yield self.policy
            return
        live = [p.data for p in self.params]
        try:
            for p, averaged in zip(self.params, self.ema):
                p.data = averaged
            yield self.policy
        finally:
            for p, own in zip(self.params, live):
                p.data = own

    @torch.no_grad()
    def _update_ema(self) -> None:
        for averaged, p in zip(self.ema or [], self.params):
            averaged.mul_(1 - self.config.ema_rate).add_(p.detach(), alpha=self.config.ema_rate)

    def hindsight_messages(self, interaction: Interaction, followup: str) -> list[dict[str, str]]:
        """The policy's own chat with the last user turn rewritten by the template."""
        *head, last = interaction.messages
        content = self.template.format(prompt=last["content"], followup=followup)
        return [*head, {"role": "user", "content": content}]

    def neutral_followup(self, interaction: Interaction) -> str:
        return pick_neutral(self.neutral_pool, f"{interaction.prompt}\x00{interaction.response.text}", salt=f"baseline-{self.seed}")

    def step(self, batch: Sequence[Interaction]) -> StepResult:
        """One update from the interactions the guard lets through; the others get empty summaries."""
        assert self.guard is not None
        self.last_advantages = {}
        learn = self.guard.review(batch)
        counts = self.guard.metrics(batch)
        if not learn:
            return StepResult(metrics=counts, per_interaction=[{} for _ in batch], skipped=f"every follow-up flagged unsafe (guard {self.config.guard.mode})")
        if self.config.learn_from == "complaints":
            learn = [i for i in learn if i.followup.satisfied is not True]
            counts["satisfied_left_out"] = float(sum(i.followup.satisfied is True for i in batch))
            if not learn:
                return StepResult(metrics=counts, per_interaction=[{} for _ in batch], skipped="every follow-up satisfied (learn_from complaints)")
        if self.config.lr_from:  # stateless: a resumed run sets the same rate at the same interaction
            counts["lr"] = self.config.lr_at(batch[0].index)
            for group in self.optimizer.param_groups:
                group["lr"] = counts["lr"]
        result = self._update(learn)
        summaries = {id(i): s for i, s in zip(learn, result.per_interaction)}
        signals = {id(i): s for i, s in zip(learn, result.signals)}
        result.metrics.update(counts)
        result.per_interaction = [summaries.get(id(i), {}) for i in batch]
        result.signals = [signals.get(id(i), {}) for i in batch]
        return result

    def token_advantages(self, batch: Sequence[Interaction], followups: Sequence[str]) -> list[list[float]]:
        """A_t of each answer's tokens were the user to reply ``followups[n]`` to ``batch[n]`` (same reference, clip and
        end-of-turn handling as an update; nothing is updated). `hindsight signal` draws these."""
        completions = [self.completion(i) for i in batch]
        with torch.no_grad():
            teacher, base, _ = self._reference_scores(batch, completions, followups, full=False)
            if base is None:
                base = self.policy.score([i.context_ids for i in batch], completions)
        adv = self._raw_advantage(teacher, base.logprobs)
        return [adv[row][teacher.mask[row]].tolist() for row in range(len(batch))]

    def _reference_scores(self, batch: Sequence[Interaction], completions: list[list[int]], followups: Sequence[str], full: bool):
        """The answers scored by the teacher (``config.teacher``) under the hindsight prompt holding ``followups`` and under
        the reference context (None for the plain reference: the student's own detached scores), and the neutral
        follow-ups used."""
        policy = self.policy
        neutral = [self.neutral_followup(i) for i in batch] if self.config.advantage_reference == "neutral" else None
        with self.teacher() as scorer:
            teacher = scorer.score([policy.encode_chat(self.hindsight_messages(i, o)) for i, o in zip(batch, followups)], completions, full_logits=full)
            if neutral is None:
                return teacher, None, None  # the plain prompt: the student's own (detached) scores, whichever the teacher
            base = scorer.score([policy.encode_chat(self.hindsight_messages(i, o)) for i, o in zip(batch, neutral)], completions, full_logits=full)
        return teacher, base, neutral

    def _raw_advantage(self, teacher, base_logprobs: torch.Tensor) -> torch.Tensor:
        raw = (teacher.logprobs - base_logprobs).masked_fill(~teacher.mask, 0.0)
        clip = self.config.advantage_clip
        return raw.clamp(-clip, clip) if clip is not None else raw

    def _update(self, batch: Sequence[Interaction]) -> StepResult:
        cfg, policy = self.config, self.policy
        completions = [self.completion(i) for i in batch]
        keep = [n for n, y in enumerate(completions) if y]
        if not keep:
            return StepResult(metrics={}, per_interaction=[{} for _ in batch], skipped="no answer tokens to train on")
        size = len(batch)
        batch = [batch[n] for n in keep]
        completions = [completions[n] for n in keep]
        full = cfg.loss != "sampled_token"
        student_ctx = [i.context_ids for i in batch]
        with torch.no_grad():
            # base None: the plain prompt under the current weights == the student's own (detached) scores
            teacher, base, neutral = self._reference_scores(batch, completions, [i.followup.text for i in batch], full)
            ref = None
            if cfg.kl_anchor > 0:
                with policy.initial() as initial:
                    ref = initial.score(student_ctx, completions, full_logits=full)

        mask = teacher.mask.clone()
        if cfg.ignore_first_k:
            mask[:, : cfg.ignore_first_k] = False
        old_logprobs = None
        metrics: dict[str, float] = {}
        for _ in range(cfg.epochs):
            student = policy.score(student_ctx, completions, full_logits=full)
            target = None
            if full:
                base_logits = base.logits if base is not None else student.logits.detach()
                target = losses.tilted_teacher(student.logits, teacher.logits, base_logits)
            if old_logprobs is None:
                old_logprobs = student.logprobs.detach()
                raw_adv = self._raw_advantage(teacher, base.logprobs if base is not None else old_logprobs)
                if cfg.positions is not None:
                    mask &= losses.top_positions(self._pull(student, target, raw_adv), mask, cfg.positions)
                advantages = losses.centre(raw_adv, mask) if cfg.centre else raw_adv.masked_fill(~mask, 0.0)
            if cfg.loss == "sampled_token":
                loss = losses.policy_gradient_loss(student.logprobs, old_logprobs, advantages, mask, cfg.clip_eps)
            elif cfg.loss == "full_kl":
                loss = losses.full_divergence_loss(student.logits, target, mask, cfg.alpha)
            else:
                loss = losses.topk_divergence_loss(student.logits, target, mask, cfg.topk, cfg.alpha)
            kl = None
            if ref is not None:
                kl = losses.full_divergence_loss(student.logits, ref.logits.log_softmax(-1), mask) if full else losses.k3_kl(student.logprobs, ref.logprobs, mask)
            total = loss + cfg.kl_anchor * kl if kl is not None else loss
            if not torch.isfinite(total):
                self.optimizer.zero_grad(set_to_none=True)
                return StepResult(metrics={"loss": total.item()}, per_interaction=[{} for _ in range(size)], skipped="non-finite loss")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], cfg.max_grad_norm)
            if not torch.isfinite(grad_norm):
                self.optimizer.zero_grad(set_to_none=True)
                return StepResult(metrics={"loss": total.item(), "grad_norm": grad_norm.item()}, per_interaction=[{} for _ in range(size)], skipped="non-finite gradient")
            self.optimizer.step()
            self._update_ema()
            metrics = {"loss": loss.item(), "grad_norm": grad_norm.item()}
            if kl is not None:
                metrics["kl_anchor"] = kl.item()
        valid = mask.float()
        metrics["advantage_mean"] = float((raw_adv * valid).sum() / valid.sum().clamp(min=1))
        metrics["answer_tokens"] = float(teacher.mask.sum())
        if cfg.positions is not None:
            metrics["trained_positions"] = float(mask.sum())
        per_interaction: list[dict] = [{} for _ in range(size)]
        signals: list[dict] = [{} for _ in range(size)]
        self.last_advantages = {id(i): raw_adv[row][teacher.mask[row]].tolist() for row, i in enumerate(batch)}
        for row, n in enumerate(keep):
            values = raw_adv[row][teacher.mask[row]].tolist()
            pieces = [self.policy.tokenizer.decode([t]) for t in completions[row]]
            per_interaction[n] = self._summary(values, pieces, completions[row], neutral[row] if neutral else None, batch[row].response.finished)
            signals[n] = {"tokens": pieces, "ids": completions[row], "advantage": [round(v, 4) for v in values], "reference": cfg.advantage_reference}
        return StepResult(metrics=metrics, per_interaction=per_interaction, signals=signals)

    @staticmethod
    @torch.no_grad()
    def _pull(student, target: torch.Tensor | None, raw_adv: torch.Tensor) -> torch.Tensor:
        """[B, T]: how far the follow-up pulls the student at each answer position: KL(q ‖ π_θ) under the vocabulary losses,
        |A_t| under the sampled-token loss (the positions= option trains only the strongest)."""
        if target is None:
            return raw_adv.abs()
        return losses.divergence(target, student.logits.log_softmax(-1), 1.0)

    def completion(self, interaction: Interaction) -> list[int]:
        """The answer tokens an update trains on (and scores): the end-of-turn token dropped unless include_eos; one appended to a
        cut answer with cut_eos."""
        tokens = list(interaction.response.token_ids)
        if not self.config.include_eos and interaction.response.finished:
            tokens = tokens[:-1]
        elif self.config.cut_eos and not interaction.response.finished and tokens:
            tokens.append(self.policy.eos_token_id)
        return tokens

    def _summary(self, values: list[float], pieces: list[str], tokens: list[int], neutral: str | None, finished: bool) -> dict:
        """Per-answer advantage statistics and the tokens the follow-up pushed hardest either way."""
        order = sorted(range(len(values)), key=values.__getitem__)
        summary = {
            "mean": sum(values) / len(values),
            "min": min(values),
            "max": max(values),
            "tokens": len(values),
            "most_negative": [[pieces[i], round(values[i], 3)] for i in order[:3]],
            "most_positive": [[pieces[i], round(values[i], 3)] for i in order[::-1][:3]],
        }
        if tokens and tokens[-1] == self.policy.eos_token_id:
            summary["eos" if finished else "cut_eos"] = values[-1]
        if neutral is not None:
            summary["neutral_followup"] = neutral
        return summary


def _summary(config) -> str:
    t = config.trainer
    extra = f", alpha {t.alpha:g}" if t.alpha != 1 else ""
    if t.teacher != "live":
        extra += f", teacher {t.teacher}" + (f" (rate {t.ema_rate:g})" if t.teacher == "ema" else "")
    extra += f", learning from {t.learn_from}" if t.learn_from != "all" else ""
    extra += f", {t.positions} positions per answer" if t.positions is not None else ""
    lr = f"lr {t.lr:g}" + "".join(f", {v:g} from {k}" for k, v in sorted(t.lr_from.items()))
    return f"trainer: {lr}, loss {t.loss}, advantage reference {t.advantage_reference}, kl_anchor {t.kl_anchor:g}{extra}"


@METHODS.register("sdpo", help="self-distillation from the follow-up (trainer.*)", summary=_summary, guarded=True)
def sdpo(inputs: TrainerInputs) -> SDPOTrainer:
    config = inputs.config
    return SDPOTrainer(inputs.policy, config.trainer_for(inputs.arm), seed=inputs.seed, neutral_pool=inputs.neutral_pool)
