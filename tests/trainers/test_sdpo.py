"""The SDPO trainer on the real SmolLM2: what must and must not move the weights."""

import pytest
import torch

from core.engine import Generation
from core.interaction import Followup, Interaction
from trainers.sdpo import SDPOConfig, SDPOTrainer

from builders import ANSWER, make_interaction, weights


def test_followup_equal_to_the_neutral_one_gives_zero_advantage_and_no_update(fresh_policy):
    trainer = SDPOTrainer(fresh_policy, SDPOConfig(advantage_reference="neutral", lr=1e-3), seed=0)
    interaction = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, "placeholder")
    neutral = trainer.neutral_followup(interaction)
    interaction.followup = Followup(neutral, neutral)
    before = weights(fresh_policy)
    result = trainer.step([interaction])
    assert result.skipped is None
    assert result.metrics["advantage_mean"] == 0.0
    assert result.per_interaction[0]["neutral_followup"] == neutral
    assert torch.equal(weights(fresh_policy), before)


def test_plain_baseline_with_an_empty_hindsight_is_a_no_op(fresh_policy):
    trainer = SDPOTrainer(fresh_policy, SDPOConfig(advantage_reference="plain", template="{prompt}{followup}", lr=1e-3), seed=0)
    before = weights(fresh_policy)
    result = trainer.step([make_interaction(fresh_policy, "How do I cook rice?", ANSWER, "")])
    assert abs(result.metrics["advantage_mean"]) < 1e-4
    assert torch.allclose(weights(fresh_policy), before, atol=1e-6)


@torch.no_grad()
def answer_logprob(policy, interaction: Interaction) -> float:
    """log π(answer | prompt): the complained-about answer's log-probability under the policy as it is now."""
    scored = policy.score([interaction.context_ids], [list(interaction.response.token_ids)])
    return float((scored.logprobs * scored.mask).sum())


def test_a_complaint_lowers_the_answers_probability_and_is_summarised(fresh_policy):
    """SDPO's direction, for every loss (each from the same untrained weights, the default neutral advantage reference): after
    one update on a complaint, the answer complained about is less likely under the policy than before."""
    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    cases = [("How do I cook rice?", ANSWER, "Way too long. One sentence, please."),
             ("What is the capital of France?", "The capital of France is Berlin.", "No, that's wrong. Berlin is in Germany.")]
    for loss in ("sampled_token", "full_kl", "topk_kl"):
        for prompt, answer, complaint in cases:
            fresh_policy.model.load_state_dict(untrained)
            trainer = SDPOTrainer(fresh_policy, SDPOConfig(loss=loss, kl_anchor=0.1, ignore_first_k=2, lr=1e-4), seed=0)
            interaction = make_interaction(fresh_policy, prompt, answer, complaint)
            before, logprob_before = weights(fresh_policy), answer_logprob(fresh_policy, interaction)
            result = trainer.step([interaction])
            assert result.skipped is None, loss
            assert not torch.equal(weights(fresh_policy), before), loss
            logprob_after = answer_logprob(fresh_policy, interaction)
            assert logprob_after < logprob_before - 1.0, (loss, prompt, logprob_before, logprob_after)
            summary = result.per_interaction[0]
            assert summary["tokens"] == len(fresh_policy.tokenizer.encode(answer, add_special_tokens=False)) + 1
            assert "eos" in summary and len(summary["most_negative"]) == 3
            assert {"loss", "grad_norm", "kl_anchor", "advantage_mean"} <= set(result.metrics)


def test_under_a_vocabulary_loss_the_anchor_is_the_exact_kl_to_the_initial_policy(fresh_policy):
    """kl_anchor with full_kl measures KL(π_θ ‖ π_0) over the whole vocabulary at each answer position (not k3 on the
    sampled token): the second step's anchor equals that KL computed from the two policies' logits directly."""
    from trainers import losses

    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    trainer = SDPOTrainer(fresh_policy, SDPOConfig(loss="full_kl", kl_anchor=0.5, lr=1e-4), seed=0)
    interaction = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, "Way too long. One sentence, please.")
    assert trainer.step([interaction]).metrics["kl_anchor"] == pytest.approx(0.0, abs=1e-6)  # nothing has moved yet
    context, answer = [interaction.context_ids], [list(interaction.response.token_ids)]
    with torch.no_grad():
        now = fresh_policy.score(context, answer, full_logits=True)
        with fresh_policy.initial() as initial:
            then = initial.score(context, answer, full_logits=True)
    expected = losses.full_divergence_loss(now.logits, then.logits.log_softmax(-1), now.mask).item()
    assert expected > 1e-4 and trainer.step([interaction]).metrics["kl_anchor"] == pytest.approx(expected, rel=1e-3)
    fresh_policy.model.load_state_dict(untrained)


def test_learning_from_complaints_leaves_the_satisfied_follow_ups_out_of_the_update(fresh_policy):
    """learn_from=complaints: a batch of a praised and a complained-about answer moves the weights exactly as the complaint
    alone does (the praise gets no summary), and a batch of praise alone is skipped with the weights untouched."""
    from dataclasses import replace

    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    complaint = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, "Way too long. One sentence, please.")
    praised = make_interaction(fresh_policy, "What is the capital of France?", "Paris.", "Perfect, thanks!")
    praised = replace(praised, followup=replace(praised.followup, satisfied=True))
    moved = {}
    for name, batch in (("alone", [complaint]), ("mixed", [praised, complaint]), ("praise", [praised])):
        fresh_policy.model.load_state_dict(untrained)
        trainer = SDPOTrainer(fresh_policy, SDPOConfig(loss="full_kl", learn_from="complaints", lr=1e-4), seed=0)
        result = trainer.step(batch)
        moved[name] = weights(fresh_policy)
        if name == "mixed":
            assert result.metrics["satisfied_left_out"] == 1.0 and result.per_interaction[0] == {} and result.per_interaction[1]
        if name == "praise":
            assert result.skipped == "every follow-up satisfied (learn_from complaints)"
    fresh_policy.model.load_state_dict(untrained)
    assert torch.equal(moved["mixed"], moved["alone"]) and torch.equal(moved["praise"], weights(fresh_policy))


def test_lr_from_is_a_piecewise_constant_rate_by_interaction():
    config = SDPOConfig(lr=1e-5, lr_from={64: 3e-5, 128: 1e-6})
    assert [config.lr_at(i) for i in (0, 63, 64, 127, 128, 500)] == [1e-5, 1e-5, 3e-5, 3e-5, 1e-6, 1e-6]
    with pytest.raises(ValueError, match="lr_from"):
        SDPOConfig(lr_from={64: 0.0})


def test_from_its_interaction_on_lr_from_updates_as_that_constant_rate_would(fresh_policy):
    """A batch starting at interaction 64 under lr_from {64: 1e-4} moves the weights bit for bit as lr 1e-4 does; one starting at
    60 as the base lr does (and not as 1e-4), and the log records the rate used."""
    from dataclasses import replace

    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    complaint = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, "Way too long. One sentence, please.")
    moved = {}
    for name, config, index in (("raised", SDPOConfig(lr=1e-5, lr_from={64: 1e-4}), 64), ("constant", SDPOConfig(lr=1e-4), 64),
                                ("before", SDPOConfig(lr=1e-5, lr_from={64: 1e-4}), 60), ("base", SDPOConfig(lr=1e-5), 60)):
        fresh_policy.model.load_state_dict(untrained)
        result = SDPOTrainer(fresh_policy, config, seed=0).step([replace(complaint, index=index)])
        moved[name] = weights(fresh_policy)
        assert result.metrics.get("lr") == ({64: 1e-4, 60: 1e-5}[index] if config.lr_from else None)
    fresh_policy.model.load_state_dict(untrained)
    assert torch.equal(moved["raised"], moved["constant"]) and torch.equal(moved["before"], moved["base"])
    assert not torch.equal(moved["raised"], moved["before"])


def test_confined_to_k_positions_the_update_trains_k_per_answer_and_all_of_them_when_k_covers_the_answer(fresh_policy):
    """positions=k: the loss sees k positions per answer (trained_positions), which changes the update; with k at least the
    answer's length the update is the unconfined one, bit for bit, for both kinds of loss."""
    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    batch = [make_interaction(fresh_policy, "How do I cook rice?", ANSWER, "Add some emojis, please! 🎉"),
             make_interaction(fresh_policy, "What is the capital of France?", "The capital of France is Paris.", "Way too long.")]
    for loss in ("sampled_token", "full_kl"):
        moved = {}
        for k in (None, 3, 500):
            fresh_policy.model.load_state_dict(untrained)
            result = SDPOTrainer(fresh_policy, SDPOConfig(loss=loss, positions=k, lr=1e-4), seed=0).step(batch)
            moved[k] = weights(fresh_policy)
            assert result.metrics.get("trained_positions") == {None: None, 3: 6.0, 500: result.metrics["answer_tokens"]}[k], (loss, k)
        assert torch.equal(moved[500], moved[None]) and not torch.equal(moved[3], moved[None]), loss
    fresh_policy.model.load_state_dict(untrained)


def test_each_tokens_advantage_is_recorded_and_token_advantages_scores_it_the_same_way(fresh_policy):
    """The update's signal (signals.jsonl) is its advantage token by token, and ``token_advantages`` (`hindsight signal`)
    gives the same numbers for the same follow-up and weights, under either advantage reference."""
    complaint = "Way too long. One sentence, please."
    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    for reference in ("neutral", "plain"):
        fresh_policy.model.load_state_dict(untrained)
        trainer = SDPOTrainer(fresh_policy, SDPOConfig(advantage_reference=reference, lr=1e-4), seed=0)
        interaction = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, complaint)
        predicted = trainer.token_advantages([interaction], [complaint])[0]
        other = trainer.token_advantages([interaction], ["Thanks, that works."])[0]
        result = trainer.step([interaction])
        signal, summary = result.signals[0], result.per_interaction[0]
        tokens = list(interaction.response.token_ids)
        assert signal["ids"] == tokens and signal["reference"] == reference
        assert "".join(signal["tokens"]) == fresh_policy.tokenizer.decode(tokens)
        assert len(signal["advantage"]) == len(tokens) == summary["tokens"]
        assert signal["advantage"] == [round(v, 4) for v in signal["advantage"]]  # compact: 4 decimals
        assert signal["advantage"] == pytest.approx(predicted, abs=2e-4), reference
        assert min(signal["advantage"]) == pytest.approx(summary["min"], abs=1e-4) and max(signal["advantage"]) == pytest.approx(summary["max"], abs=1e-4)
        assert other != predicted  # another follow-up, another signal (its direction: tests/harness/test_signals.py)


def test_template_must_have_both_placeholders():
    with pytest.raises(ValueError):
        SDPOConfig(template="no placeholders here")


def test_a_non_finite_loss_or_gradient_skips_the_update_and_leaves_weights_and_optimizer_alone(fresh_policy, monkeypatch):
    from trainers import losses

    trainer = SDPOTrainer(fresh_policy, SDPOConfig(lr=1e-3), seed=0)
    interaction = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, "Way too long. One sentence, please.")
    before = weights(fresh_policy)
    real_loss = losses.policy_gradient_loss
    monkeypatch.setattr(losses, "policy_gradient_loss", lambda *a: real_loss(*a) * float("nan"))  # a NaN advantage gives this
    result = trainer.step([interaction])
    assert result.skipped == "non-finite loss" and result.per_interaction == [{}]
    monkeypatch.setattr(losses, "policy_gradient_loss", real_loss)
    hook = next(p for p in fresh_policy.model.parameters() if p.requires_grad).register_hook(lambda g: g * float("inf"))
    result = trainer.step([interaction])
    hook.remove()
    assert result.skipped == "non-finite gradient" and result.per_interaction == [{}]
    assert torch.equal(weights(fresh_policy), before) and not trainer.optimizer.state  # no step taken, no Adam moments
    assert trainer.step([interaction]).skipped is None and not torch.equal(weights(fresh_policy), before)  # and it recovers


def test_the_old_baseline_key_is_read_once_with_a_deprecation_line(capsys):
    from core import yamlio
    from trainers.offline import OfflineConfig

    yamlio._DEPRECATED_SEEN.clear()
    assert SDPOConfig.model_validate({"baseline": "plain"}).advantage_reference == "plain"
    assert SDPOConfig.model_validate({"baseline": "neutral"}).advantage_reference == "neutral"
    assert OfflineConfig.model_validate({"baseline": "neutral"}).advantage_reference == "neutral"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["hindsight: deprecated: trainer.baseline is now trainer.advantage_reference; the old name is still read, for now"]
    assert "baseline" not in SDPOConfig().model_dump() and SDPOConfig().advantage_reference == "neutral"
    try:
        SDPOConfig.model_validate({"baseline": "plain", "advantage_reference": "plain"})
    except ValueError as exc:
        assert "give only advantage_reference" in str(exc)
    else:
        raise AssertionError("both spellings at once must fail")


COMPLAINT = "Way too long. One sentence, please."


def test_alpha_other_than_one_needs_a_distribution_loss():
    import pytest

    with pytest.raises(ValueError, match="alpha 0.5 needs loss full_kl or topk_kl"):
        SDPOConfig(alpha=0.5)
    assert SDPOConfig(alpha=0.5, loss="topk_kl").alpha == 0.5
    assert (SDPOConfig().alpha, SDPOConfig().teacher, SDPOConfig().ema_rate) == (1.0, "live", 0.05)  # the paper's live teacher stays the default


def test_the_ema_teacher_starts_as_the_policy_moves_by_its_rate_and_swaps_back_exactly(fresh_policy):
    """At the first step the EMA equals the weights, so the update is the live teacher's bit for bit; after it the EMA is
    (1 − rate)·θ₀ + rate·θ₁, the teacher forwards see those weights, and the policy gets its own storage back untouched."""
    interaction = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, COMPLAINT)
    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    live = SDPOTrainer(fresh_policy, SDPOConfig(lr=1e-3), seed=0)
    live.step([interaction])
    after_live = weights(fresh_policy)
    fresh_policy.model.load_state_dict(untrained)
    theta0 = weights(fresh_policy)
    trainer = SDPOTrainer(fresh_policy, SDPOConfig(lr=1e-3, teacher="ema", ema_rate=0.25), seed=0)
    assert trainer.state_dict().keys() == {"optimizer", "ema"} and live.state_dict().keys() == {"optimizer"}
    trainer.step([interaction])
    theta1 = weights(fresh_policy)
    assert torch.equal(theta1, after_live)
    ema = torch.cat([t.flatten() for t in trainer.ema])
    assert torch.allclose(ema, 0.75 * theta0 + 0.25 * theta1, atol=1e-7) and not torch.equal(ema, theta1)
    storage = [p.data_ptr() for p in fresh_policy.model.parameters()]
    with trainer.teacher() as teacher:
        assert torch.equal(weights(teacher), ema)
    assert [p.data_ptr() for p in fresh_policy.model.parameters()] == storage and torch.equal(weights(fresh_policy), theta1)


def test_the_initial_teacher_scores_with_the_untrained_weights(fresh_policy):
    trainer = SDPOTrainer(fresh_policy, SDPOConfig(lr=1e-3, teacher="initial", loss="full_kl", alpha=0.5), seed=0)
    theta0 = weights(fresh_policy)
    interaction = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, COMPLAINT)
    for _ in range(2):
        assert trainer.step([interaction]).skipped is None
    assert not torch.equal(weights(fresh_policy), theta0)
    with trainer.teacher() as teacher:
        assert torch.equal(weights(teacher), theta0)


def test_a_resumed_ema_trainer_continues_exactly(fresh_policy, tmp_path):
    """Two steps in one go equal one step, a checkpoint through safetensors, a fresh model and trainer, and the second step."""
    from core.policy import Policy, PolicySettings
    from harness.checkpoint import ArmCheckpoints, ArmState, load_trainable_weights, trainable_weights

    config = SDPOConfig(lr=1e-3, teacher="ema", loss="topk_kl", alpha=0.0)
    batches = [[make_interaction(fresh_policy, "How do I cook rice?", ANSWER, COMPLAINT)],
               [make_interaction(fresh_policy, "What is the capital of France?", "The capital of France is Berlin.", "No, that's wrong.")]]
    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    straight = SDPOTrainer(fresh_policy, config, seed=0)
    for batch in batches:
        straight.step(batch)
    expected_weights, expected_ema = weights(fresh_policy), [t.clone() for t in straight.ema]
    fresh_policy.model.load_state_dict(untrained)
    first = SDPOTrainer(fresh_policy, config, seed=0)
    first.step(batches[0])
    checkpoints = ArmCheckpoints(tmp_path / "treated-s0")
    checkpoints.save(ArmState(step=0, done=1), {"weights": trainable_weights(fresh_policy.model), "trainer": first.state_dict()})
    saved = checkpoints.load(checkpoints.latest())
    resumed_policy = Policy.load(PolicySettings(device="cpu"))
    resumed = SDPOTrainer(resumed_policy, config, seed=0)
    load_trainable_weights(resumed_policy.model, saved["weights"])
    resumed.load_state_dict(saved["trainer"])
    resumed.step(batches[1])
    assert torch.equal(weights(resumed_policy), expected_weights)
    assert all(torch.equal(a, b) for a, b in zip(resumed.ema, expected_ema, strict=True))


def test_under_lora_the_ema_holds_the_adapter_only(tmp_path):
    from core.policy import LoraSettings, Policy, PolicySettings

    policy = Policy.load(PolicySettings(device="cpu", lora=LoraSettings(r=4, alpha=8)))
    trainer = SDPOTrainer(policy, SDPOConfig(lr=1e-3, teacher="ema"), seed=0)
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names) and len(trainer.ema) == len(names)
    adapter = sum(t.numel() for t in trainer.ema)
    assert adapter < 0.05 * sum(p.numel() for p in policy.model.parameters())  # the cost: a copy of the adapter, not of the model
    before = [t.clone() for t in trainer.ema]
    assert trainer.step([make_interaction(policy, "How do I cook rice?", ANSWER, COMPLAINT)]).skipped is None
    assert any(not torch.equal(a, b) for a, b in zip(trainer.ema, before))


def test_the_summary_line_names_alpha_teacher_learn_from_and_positions_only_when_they_differ_from_the_default():
    from harness.config import RunConfig
    from trainers.sdpo import _summary

    assert _summary(RunConfig()) == "trainer: lr 2e-05, loss sampled_token, advantage reference neutral, kl_anchor 0"
    varied = RunConfig(trainer=SDPOConfig(loss="full_kl", alpha=0.5, teacher="ema"))
    assert _summary(varied).endswith("loss full_kl, advantage reference neutral, kl_anchor 0, alpha 0.5, teacher ema (rate 0.05)")
    assert _summary(RunConfig(trainer=SDPOConfig(teacher="initial"))).endswith("kl_anchor 0, teacher initial")
    confined = RunConfig(trainer=SDPOConfig(learn_from="complaints", positions=8))
    assert _summary(confined).endswith("kl_anchor 0, learning from complaints, 8 positions per answer")
    assert _summary(RunConfig(trainer=SDPOConfig(lr_from={64: 6e-5}))).startswith("trainer: lr 2e-05, 6e-05 from 64, loss")


@torch.no_grad()
def stop_logprob(policy, interaction: Interaction) -> float:
    """log π(end-of-turn | prompt, the cut answer): how likely the policy is to stop where the answer was cut."""
    scored = policy.score([interaction.context_ids], [[*interaction.response.token_ids, policy.eos_token_id]])
    return float(scored.logprobs[0, int(scored.mask[0].sum()) - 1])


def test_cut_eos_scores_stopping_where_a_cut_answer_was_cut_and_a_length_complaint_raises_it(fresh_policy):
    """An answer cut at the token cap has no end-of-turn token: by default a "too long" complaint cannot say "stop here". With
    cut_eos the update scores and trains one where the answer was cut (recorded as cut_eos, not eos), and after one update on the
    complaint the policy is more likely to stop there; a finished answer is scored as before."""
    untrained = {k: v.clone() for k, v in fresh_policy.model.state_dict().items()}
    long = ("Rice is a grain that people eat all over the world, and cooking it well takes a little care. First rinse the rice in cold "
            "water until the water runs clear, then add two cups of water for every cup of rice, and")
    complaint = "Way too long. One sentence, please."
    cut = make_interaction(fresh_policy, "How do I cook rice?", long, complaint)
    cut.response = Generation(long, cut.response.token_ids[:-1], False)
    finished = make_interaction(fresh_policy, "How do I cook rice?", ANSWER, complaint)
    plain, appended = SDPOTrainer(fresh_policy, SDPOConfig()), SDPOTrainer(fresh_policy, SDPOConfig(cut_eos=True))
    assert plain.completion(cut) == list(cut.response.token_ids) and appended.completion(cut) == [*cut.response.token_ids, fresh_policy.eos_token_id]
    assert appended.completion(finished) == plain.completion(finished) == list(finished.response.token_ids)
    before = stop_logprob(fresh_policy, cut)
    trainer = SDPOTrainer(fresh_policy, SDPOConfig(cut_eos=True, lr=1e-4), seed=0)
    result = trainer.step([cut])
    summary = result.per_interaction[0]
    assert "eos" not in summary and summary["cut_eos"] > 0  # the complaint says: stop here
    assert summary["tokens"] == len(cut.response.token_ids) + 1 and result.signals[0]["ids"][-1] == fresh_policy.eos_token_id
    assert stop_logprob(fresh_policy, cut) > before + 0.5
    fresh_policy.model.load_state_dict(untrained)
