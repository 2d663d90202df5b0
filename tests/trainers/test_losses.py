"""Each SDPO loss variant against values worked out by hand on tiny tensors."""

import math

import pytest
import torch

from trainers import losses


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


MASK = torch.tensor([[True, True, False]])


def test_policy_gradient_is_minus_mean_advantage_and_its_gradient():
    logp = leaf([[-1.0, -2.0, 0.0]])
    adv = torch.tensor([[0.5, 1.0, 9.0]], dtype=torch.float64)  # the masked 9.0 must not count
    loss = losses.policy_gradient_loss(logp, logp.detach(), adv, MASK, clip_eps=0.2)
    assert loss.item() == pytest.approx(-0.75)  # −(0.5 + 1.0) / 2 with ratio 1
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.25, -0.5, 0.0])  # −A_t / T


def test_ratio_clipping_by_hand():
    logp = leaf([[-1.0, -2.0, 0.0]])
    old = torch.tensor([[-1.2, -1.5, 0.0]], dtype=torch.float64)
    adv = torch.tensor([[0.5, 1.0, 0.0]], dtype=torch.float64)
    # r = (e^0.2, e^-0.5) = (1.2214, 0.6065); token 1 clipped to 1.2·0.5 = 0.6, token 2 keeps 0.6065·1.0
    loss = losses.policy_gradient_loss(logp, old, adv, MASK, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(0.6 + math.exp(-0.5)) / 2)
    unclipped = losses.policy_gradient_loss(logp, old, adv, MASK, clip_eps=None)
    assert unclipped.item() == pytest.approx(-(math.exp(0.2) * 0.5 + math.exp(-0.5)) / 2)


def test_centring_removes_each_answers_mean():
    adv = torch.tensor([[0.5, 1.0, 7.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert losses.centre(adv, mask).tolist() == [[-0.25, 0.25, 0.0], [0.0, 0.0, 0.0]]


def test_top_positions_keeps_each_rows_largest_valid_scores():
    scores = torch.tensor([[0.1, 0.9, 0.5, 9.0], [3.0, -1.0, 2.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True], [True, False, False, False]])
    kept = losses.top_positions(scores, mask, 2)  # the masked 9.0 never wins; a row with one valid position keeps it alone
    assert kept.tolist() == [[False, True, True, False], [True, False, True, False], [True, False, False, False]]
    assert torch.equal(losses.top_positions(scores, mask, 10), mask)


def test_sequence_mean_weighs_answers_equally():
    values = torch.tensor([[1.0, 3.0, 100.0], [10.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert losses.sequence_mean(values, mask).item() == pytest.approx((2.0 + 10.0) / 2)


def test_full_reverse_kl_to_uniform_teacher():
    student = leaf([[[1.0, 0.0, -1.0]]])
    teacher = torch.log(torch.full((1, 1, 3), 1 / 3, dtype=torch.float64))
    # p = softmax(1, 0, −1) = (0.6652, 0.2447, 0.0900); Σ p log p = −0.8323; KL = −0.8323 + ln 3 = 0.2663
    kl = losses.full_divergence_loss(student, teacher, torch.tensor([[True]]))
    assert kl.item() == pytest.approx(0.2663, abs=1e-4)


def test_topk_with_tail_bucket_by_hand():
    student = leaf([[[1.0, 0.0, -1.0]]])
    teacher = torch.log(torch.full((1, 1, 3), 1 / 3, dtype=torch.float64))
    # k = 1: top token 0.6652 vs 1/3, tail 0.3348 vs 2/3 → 0.6652·ln(1.9956) + 0.3348·ln(0.5022) = 0.2291
    kl = losses.topk_divergence_loss(student, teacher, torch.tensor([[True]]), k=1)
    assert kl.item() == pytest.approx(0.2291, abs=1e-4)
    # with k = vocabulary size the tail is empty and it equals the full KL
    full = losses.full_divergence_loss(student, teacher, torch.tensor([[True]]))
    assert losses.topk_divergence_loss(student, teacher, torch.tensor([[True]]), k=3).item() == pytest.approx(full.item(), abs=1e-6)


P_LOGITS = [[[1.0, 0.0, -1.0]]]  # p = softmax(1, 0, −1) = (0.6652, 0.2447, 0.0900), log p = (1, 0, −1) − 1.4076
UNIFORM = torch.log(torch.full((1, 1, 3), 1 / 3, dtype=torch.float64))
ONE = torch.tensor([[True]])


def test_alpha_zero_is_the_forward_kl_by_hand():
    # KL(q ‖ p) with q uniform = −ln 3 − mean(log p) = −1.0986 + 1.4076 = 0.3090
    assert losses.full_divergence_loss(leaf(P_LOGITS), UNIFORM, ONE, alpha=0.0).item() == pytest.approx(0.30899, abs=1e-5)
    # top-1 with the tail bucket: (1/3, 2/3) against (0.6652, 0.3348): ⅓·ln(0.5011) + ⅔·ln(1.9913) = 0.2289
    assert losses.topk_divergence_loss(leaf(P_LOGITS), UNIFORM, ONE, k=1, alpha=0.0).item() == pytest.approx(0.22892, abs=1e-5)


def test_alpha_half_is_the_jensen_shannon_divergence_by_hand():
    # m = (p + q)/2 = (0.4993, 0.2890, 0.2117); KL(p ‖ m) = 0.07321, KL(q ‖ m) = 0.06421; JSD = their mean = 0.06871
    assert losses.full_divergence_loss(leaf(P_LOGITS), UNIFORM, ONE, alpha=0.5).item() == pytest.approx(0.068712, abs=1e-5)
    # top-1 with the tail: m = (0.4993, 0.5007) between (0.6652, 0.3348) and (1/3, 2/3): 0.05614
    assert losses.topk_divergence_loss(leaf(P_LOGITS), UNIFORM, ONE, k=1, alpha=0.5).item() == pytest.approx(0.056140, abs=1e-5)


def test_the_generalized_jsd_runs_from_forward_to_reverse_kl_scaled_down_near_the_ends():
    log_p, log_q = torch.tensor(P_LOGITS, dtype=torch.float64).log_softmax(-1), UNIFORM
    forward, reverse = losses.divergence(log_p, log_q, 0.0).item(), losses.divergence(log_p, log_q, 1.0).item()
    assert losses.divergence(log_p, log_q, 1e-4).item() / 1e-4 == pytest.approx(forward, rel=1e-3)  # ≈ α·KL(q ‖ p)
    assert losses.divergence(log_p, log_q, 1 - 1e-4).item() / 1e-4 == pytest.approx(reverse, rel=1e-3)  # ≈ (1 − α)·KL(p ‖ q)
    assert losses.divergence(log_q, log_q, 0.3).item() == pytest.approx(0.0, abs=1e-12)


def _before_alpha(student_logits, teacher_logprobs, mask, k=None):
    """The two losses exactly as they were written before α existed (the reverse KL only)."""
    log_p = student_logits.log_softmax(-1)
    if k is None:
        return losses.sequence_mean((log_p.exp() * (log_p - teacher_logprobs)).sum(-1), mask)
    top = log_p.topk(k, dim=-1).indices
    lp_top, lq_top = log_p.gather(-1, top), teacher_logprobs.gather(-1, top)
    lp_tail = torch.log1p(-lp_top.exp().sum(-1).clamp(max=1 - 1e-6))
    lq_tail = torch.log1p(-lq_top.exp().sum(-1).clamp(max=1 - 1e-6))
    return losses.sequence_mean((lp_top.exp() * (lp_top - lq_top)).sum(-1) + lp_tail.exp() * (lp_tail - lq_tail), mask)


def test_alpha_one_is_the_earlier_reverse_kl_bit_for_bit_value_and_gradient():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 49152, generator=generator) * 3  # the embedded model's vocabulary size, float32 like the trainer
    teacher = (torch.randn(2, 5, 49152, generator=generator) * 3).log_softmax(-1)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    for k in (None, 20):
        a, b = student.clone().requires_grad_(), student.clone().requires_grad_()
        new = losses.full_divergence_loss(a, teacher, mask) if k is None else losses.topk_divergence_loss(a, teacher, mask, k)
        old = _before_alpha(b, teacher, mask, k)
        new.backward(), old.backward()
        assert torch.equal(new, old) and torch.equal(a.grad, b.grad), k


def test_tilted_teacher_plain_baseline_is_the_hindsight_distribution():
    student = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    hindsight = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)
    target = losses.tilted_teacher(student, hindsight, student)
    assert target.tolist() == pytest.approx(hindsight.log_softmax(-1).tolist())


def test_tilted_teacher_neutral_baseline_moves_by_the_difference_only():
    student = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    # q ∝ p · exp(h − b) = softmax(s + h − b) = softmax(2, 0, −1)
    target = losses.tilted_teacher(student, torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert target.tolist() == pytest.approx(torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64).log_softmax(-1).tolist())


def anchored_walk(beta: float, steps: int) -> torch.Tensor:
    """The trainer's dynamics at one answer position: each step re-tilts the student's own (detached) distribution by the same
    follow-up tilt t and takes a gradient step on KL(π_θ ‖ q) + β·KL(π_θ ‖ π_0); returns π_θ at the end."""
    initial = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0], dtype=torch.float64)
    tilt = torch.tensor([0.0, 0.3, 0.6, -0.2, 0.1], dtype=torch.float64)  # log π(·|H(o)) − log π(·|B): favours token 2
    logits, one = initial.clone().requires_grad_(True), torch.tensor([True])
    for _ in range(steps):
        target = losses.tilted_teacher(logits, tilt, torch.zeros(5, dtype=torch.float64))
        loss = losses.full_divergence_loss(logits, target, one) + beta * losses.full_divergence_loss(logits, initial.log_softmax(-1), one)
        (grad,) = torch.autograd.grad(loss, logits)
        logits = (logits - 2.0 * grad).detach().requires_grad_(True)
    return logits.detach().softmax(-1)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_the_vocabulary_anchor_stops_the_walk_at_the_initial_policy_times_the_tilt_to_the_one_over_beta(beta):
    """Why ``kl_anchor`` is the exact KL under the vocabulary losses: the fixed point is π_0·t^(1/β) (β = 1: what the model
    would say knowing the follow-up), where without an anchor every step re-applies t and the walk ends on t's argmax."""
    initial = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0], dtype=torch.float64)
    tilt = torch.tensor([0.0, 0.3, 0.6, -0.2, 0.1], dtype=torch.float64)
    assert anchored_walk(beta, 3000).tolist() == pytest.approx((initial + tilt / beta).softmax(-1).tolist(), abs=1e-6)
    unanchored = anchored_walk(0.0, 3000)
    assert unanchored.argmax().item() == 2 and unanchored[2].item() > 0.95  # one token, the tilt's favourite, takes over


def test_k3_kl_by_hand():
    logp = torch.tensor([[-1.0]])
    ref = torch.tensor([[-1.5]])
    assert losses.k3_kl(logp, ref, torch.tensor([[True]])).item() == pytest.approx(math.exp(-0.5) + 0.5 - 1, abs=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_divergences_equal_trls_sdpo_losses(alpha):
    """Against TRL 1.16's own functions, when TRL is importable (not a dependency: e.g.
    ``pip install --no-deps trl==1.16.0 --target /tmp/trl`` and ``PYTHONPATH=/tmp/trl``)."""
    trl = pytest.importorskip("trl.experimental.sdpo.loss_utils")
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(2, 4, 64, generator=generator, dtype=torch.float64) * 2
    teacher = torch.randn(2, 4, 64, generator=generator, dtype=torch.float64) * 2
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    theirs = {
        "full": trl.compute_full_logit_self_distillation_loss(student, teacher, distillation_alpha=alpha),
        "topk": trl.compute_topk_self_distillation_loss(student, teacher, distillation_topk=5, distillation_alpha=alpha, distillation_add_tail=True),
    }
    ours = {
        "full": losses.full_divergence_loss(student, teacher.log_softmax(-1), mask, alpha=alpha),
        "topk": losses.topk_divergence_loss(student, teacher.log_softmax(-1), mask, k=5, alpha=alpha),
    }
    for name, per_token in theirs.items():
        assert ours[name].item() == pytest.approx(losses.sequence_mean(per_token, mask).item(), abs=1e-5), name
