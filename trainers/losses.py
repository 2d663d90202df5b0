"""Pure loss functions on per-token tensors ([B, T] or [B, T, V], with a [B, T] bool mask).

Every loss averages over a sequence's valid tokens first, then over the batch (each answer weighs the same,
whatever its length), as the SDPO paper's code does.
"""

from __future__ import annotations

import math

import torch


def per_sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: mean over each row's valid tokens (0 for a row with none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens of each row, then over rows that have any valid token."""
    per_row = per_sequence_mean(values, mask)
    valid = mask.any(-1)
    return per_row[valid].mean() if valid.any() else values.sum() * 0.0


def centre(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Subtract each sequence's mean advantage over its valid tokens (masked positions stay 0)."""
    m = mask.to(advantages.dtype)
    mean = (advantages * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
    return (advantages - mean) * m


def top_positions(scores: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """[B, T] bool: each row's k valid positions with the largest ``scores`` (every valid one in a row with k or fewer)."""
    ranked = scores.masked_fill(~mask, float("-inf")).topk(min(k, scores.shape[-1]), dim=-1).indices
    return torch.zeros_like(mask).scatter(-1, ranked, True) & mask


def policy_gradient_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float | None) -> torch.Tensor:
    """PPO-style surrogate: −min(r·A, clip(r, 1±ε)·A), r = exp(logπ − logπ_old). With r ≡ 1 its gradient is −A·∇logπ."""
    ratio = torch.exp(logprobs - old_logprobs)
    surrogate = ratio * advantages
    if clip_eps is not None:
        surrogate = torch.minimum(surrogate, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    return sequence_mean(-surrogate, mask)


def offline_surrogate(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: the off-policy SDPO surrogate per logged answer, −mean_t sg(A_t)·log π_θ(y_t | x, y<t).

    The answer was written by another model, so there is no sampling ratio: the advantage weighs the log-likelihood of
    the logged token directly. Its gradient equals the online loss's at ratio 1; its value does not (−A·log π, not −A).
    """
    return per_sequence_mean(-advantages.detach() * logprobs, mask)


def nll(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: supervised fine-tuning on the logged answer, −mean_t log π_θ(y_t | x, y<t)."""
    return per_sequence_mean(-logprobs, mask)


def tilted_teacher(student_logits: torch.Tensor, hindsight_logits: torch.Tensor, baseline_logits: torch.Tensor) -> torch.Tensor:
    """Teacher log-distribution log q ∝ log π_θ + log π(·|H(o)) − log π(·|baseline), all but π_θ detached.

    With the plain prompt as baseline (the paper's setting, same weights) this is exactly log π(·|H(o)); with the
    neutral baseline it moves the student only by what the follow-up changed, not by the hindsight prompt itself.
    """
    log_q = student_logits.detach().log_softmax(-1) + hindsight_logits.log_softmax(-1) - baseline_logits.log_softmax(-1)
    return log_q.log_softmax(-1)


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-position divergence between the student p and the teacher q (log-distributions over the last axis), summed over
    it; α runs as TRL's ``distillation_alpha`` (and GKD's β): 0 = forward KL(q ‖ p), 1 = reverse KL(p ‖ q), between them the
    generalized JSD (1 − α)·KL(p ‖ m) + α·KL(q ‖ m) with m = (1 − α)·p + α·q (0.5: the JSD).

    The generalized JSD is not a blend of the two ends: it vanishes as α → 0 or 1, like α·KL(q ‖ p) near 0 and
    (1 − α)·KL(p ‖ q) near 1, so an α close to either end also scales the step down. Terms are per element, so the
    divergence over a support split in parts is the sum of the parts' divergences.
    """
    if alpha == 1:
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if alpha == 0:
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    log_m = torch.logsumexp(torch.stack([log_p + math.log(1 - alpha), log_q + math.log(alpha)]), dim=0)
    return (1 - alpha) * (log_p.exp() * (log_p - log_m)).sum(-1) + alpha * (log_q.exp() * (log_q - log_m)).sum(-1)


def full_divergence_loss(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor, mask: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``divergence`` over the whole vocabulary at every completion position (α = 1: reverse KL(π_θ ‖ q))."""
    log_p = student_logits.log_softmax(-1)
    return sequence_mean(divergence(log_p, teacher_logprobs, alpha), mask)


def topk_divergence_loss(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor, mask: torch.Tensor, k: int, alpha: float = 1.0) -> torch.Tensor:
    """``divergence`` restricted to the student's top-k tokens plus one bucket holding the rest of the mass of each."""
    log_p = student_logits.log_softmax(-1)
    top = log_p.topk(k, dim=-1).indices
    lp_top = log_p.gather(-1, top)
    lq_top = teacher_logprobs.gather(-1, top)
    lp_tail = torch.log1p(-lp_top.exp().sum(-1).clamp(max=1 - 1e-6)).unsqueeze(-1)
    lq_tail = torch.log1p(-lq_top.exp().sum(-1).clamp(max=1 - 1e-6)).unsqueeze(-1)
    return sequence_mean(divergence(lp_top, lq_top, alpha) + divergence(lp_tail, lq_tail, alpha), mask)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased, non-negative estimate of KL(π_θ ‖ π_ref) on sampled tokens (Schulman's k3)."""
    log_ratio = ref_logprobs - logprobs
    return sequence_mean(torch.exp(log_ratio) - log_ratio - 1, mask)


def sequence_logprob(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(y | x) of each row: the sum of its valid tokens' log-probs."""
    return (logprobs * mask.to(logprobs.dtype)).sum(-1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO on sequence log-probs [B]: mean of −log σ(β·[(log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻))]).

    Returns (loss, implicit reward of the chosen, of the rejected), the rewards β·(log π − log π_ref), detached."""
    chosen_reward = beta * (chosen - ref_chosen)
    rejected_reward = beta * (rejected - ref_rejected)
    loss = -torch.nn.functional.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, chosen_reward.detach(), rejected_reward.detach()


def nll_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning: mean negative log-likelihood per token of each answer, then over answers."""
    return sequence_mean(-logprobs, mask)
