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


def test_sequence_mean_weighs_answers_equally():
    values = torch.tensor([[1.0, 3.0, 100.0], [10.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert losses.sequence_mean(values, mask).item() == pytest.approx((2.0 + 10.0) / 2)


def test_full_reverse_kl_to_uniform_teacher():
    student = leaf([[[1.0, 0.0, -1.0]]])
    teacher = torch.log(torch.full((1, 1, 3), 1 / 3, dtype=torch.float64))
    # p = softmax(1, 0, −1) = (0.6652, 0.2447, 0.0900); Σ p log p = −0.8323; KL = −0.8323 + ln 3 = 0.2663
    kl = losses.reverse_kl_loss(student, teacher, torch.tensor([[True]]))
    assert kl.item() == pytest.approx(0.2663, abs=1e-4)


def test_topk_with_tail_bucket_by_hand():
    student = leaf([[[1.0, 0.0, -1.0]]])
    teacher = torch.log(torch.full((1, 1, 3), 1 / 3, dtype=torch.float64))
    # k = 1: top token 0.6652 vs 1/3, tail 0.3348 vs 2/3 → 0.6652·ln(1.9956) + 0.3348·ln(0.5022) = 0.2291
    kl = losses.topk_reverse_kl_loss(student, teacher, torch.tensor([[True]]), k=1)
    assert kl.item() == pytest.approx(0.2291, abs=1e-4)
    # with k = vocabulary size the tail is empty and it equals the full KL
    full = losses.reverse_kl_loss(student, teacher, torch.tensor([[True]]))
    assert losses.topk_reverse_kl_loss(student, teacher, torch.tensor([[True]]), k=3).item() == pytest.approx(full.item(), abs=1e-6)


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


def test_k3_kl_by_hand():
    logp = torch.tensor([[-1.0]])
    ref = torch.tensor([[-1.5]])
    assert losses.k3_kl(logp, ref, torch.tensor([[True]])).item() == pytest.approx(math.exp(-0.5) + 0.5 - 1, abs=1e-6)
