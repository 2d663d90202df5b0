"""The fast decode loop against transformers' generate, on the real model: greedy gives the same token ids, sampling
draws from exactly the same distribution (with PyTorch's own linears; oneDNN's, the CPU default, agree up to rounding)."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from core.engine import HFEngine, SamplingParams, _keep, _length_groups, warp
from core.prompts import PromptSettings, load_prompts
from core.runtime import seed_everything

# two that end early (so finished rows leave the batch mid-generation), and built-in prompts of uneven length
SHORT = ["Answer with one word only: what is the capital of France?", "Reply with just 'yes' or 'no': is water wet?"]


@pytest.fixture(scope="module")
def contexts(policy):
    heldout = load_prompts(PromptSettings()).heldout
    prompts = [SHORT[0], heldout[10], heldout[0], SHORT[1], heldout[1], heldout[22], heldout[2], heldout[3]]
    return [policy.encode_chat(policy.messages(p)) for p in prompts]


def test_greedy_same_tokens_as_generate(policy, contexts):
    params = SamplingParams(max_new_tokens=64, temperature=0.0)
    reference = HFEngine(policy, batch_size=4, impl="hf").generate(contexts, params)
    assert len({len(c) for c in contexts}) > 3 and any(g.finished for g in reference) and not all(g.finished for g in reference)
    for batch_size in (4, 1):
        fast = HFEngine(policy, batch_size=batch_size, linear="aten").generate(contexts, params)
        assert [g.token_ids for g in fast] == [g.token_ids for g in reference], batch_size
        assert fast == reference


def test_greedy_batch_one_against_generate_batch_one(policy, contexts):
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    picked = contexts[:3]
    assert HFEngine(policy, batch_size=1, linear="aten").generate(picked, params) == HFEngine(policy, batch_size=1, impl="hf").generate(picked, params)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)])
def test_warp_is_transformers_bit_for_bit(temperature, top_p):
    logits = torch.randn(6, 49152, generator=torch.Generator().manual_seed(0)) * 4
    expected = logits
    if temperature != 1.0:
        expected = TemperatureLogitsWarper(temperature)(None, expected)
    if top_p < 1.0:
        expected = TopPLogitsWarper(top_p)(None, expected)
    assert torch.equal(warp(logits, SamplingParams(temperature=temperature, top_p=top_p)), expected)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_sampling_same_draws_as_generate_at_batch_one(policy, contexts, temperature, top_p):
    """One row: both consume the generator identically (one multinomial over the vocabulary per step), so the same
    seed gives the same tokens."""
    params = SamplingParams(max_new_tokens=24, temperature=temperature, top_p=top_p)
    picked = contexts[1:3]
    seed_everything(3)
    fast = HFEngine(policy, batch_size=1, impl="fast", linear="aten").generate(picked, params)
    seed_everything(3)
    assert fast == HFEngine(policy, batch_size=1, impl="hf").generate(picked, params)


def test_sampling_distribution_is_the_policys(policy, contexts, monkeypatch):
    """Batched, rows dropping out, the default (oneDNN) linears: at every step, the probabilities the sampler draws from
    equal the tempered, top-p softmax of the model's own logits for that row's context and answer so far (re-scored in one full forward)."""
    params = SamplingParams(max_new_tokens=40, temperature=0.8, top_p=0.9)
    seen: list[torch.Tensor] = []
    draw = torch.multinomial

    def spy(probs, num_samples, **kwargs):
        seen.append(probs.clone())
        return draw(probs, num_samples, **kwargs)

    monkeypatch.setattr(torch, "multinomial", spy)
    seed_everything(0)
    answers = HFEngine(policy, batch_size=8, impl="fast").generate(contexts, params)
    monkeypatch.undo()
    assert any(a.finished for a in answers)
    with torch.no_grad():
        scored = policy.score(contexts, [list(a.token_ids) for a in answers], full_logits=True)
    alive = list(range(len(contexts)))
    for step, probs in enumerate(seen):
        assert probs.shape[0] == len(alive)
        for row, n in enumerate(alive):
            expected = torch.softmax(warp(scored.logits[n, step : step + 1].float(), params), dim=-1)[0]
            token = answers[n].token_ids[step]
            assert probs[row, token] > 0
            # the same probabilities (nucleus included), up to incremental-vs-full forward rounding
            assert (probs[row] - expected).abs().max() < 1e-4
        alive = [n for n in alive if len(answers[n].token_ids) > step + 1]


def test_length_groups():
    assert _length_groups([40, 112, 35, 42, 105, 50]) == [[2, 0, 3], [5], [4, 1]]
    assert _length_groups([7]) == [[0]]


def test_finished_rows_leave_unless_a_smaller_batch_is_slower():
    assert _keep([0, 1, None, 3], 3) is None  # 3 rows cost more than 4: keep the finished one
    assert _keep([0, None, None, 3], 2) is None
    assert _keep([None, None, None, 3], 1) == [3]
    assert _keep([0, 1, None, 3, 4, None, 6, 7], 6) == [0, 1, 3, 4, 6, 7]
    assert _keep([0, None, None, 3, 4, None, 6, None], 4) == [0, 3, 4, 6]
    assert _keep([0, None, None, None, 4, None, None, None], 2) == [0, 1, 2, 4]


def test_onednn_linears_are_greedy_up_to_rounding_and_unpatched_after(policy, contexts):
    """oneDNN kernels (the CPU default) round differently from MKL's, so each greedy token only has to be the model's argmax up to
    rounding (log-prob within 1e-3 of the best); afterwards the model computes with its own linears again."""
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    picked = contexts[:4]
    answers = HFEngine(policy, batch_size=4, linear="onednn").generate(picked, params)
    assert not any("forward" in m.__dict__ for m in policy.model.modules())
    with torch.no_grad():
        scored = policy.score(picked, [list(a.token_ids) for a in answers], full_logits=True)
    best = torch.log_softmax(scored.logits, dim=-1).max(-1).values
    assert ((best - scored.logprobs).masked_fill(~scored.mask, 0) < 1e-3).all()
    with pytest.raises(ValueError):
        HFEngine(policy, impl="hf", linear="onednn")


def test_auto_picks_the_loop_by_linears(policy, contexts, monkeypatch):
    """On the CPU the default runs oneDNN linears and the fast loop for both greedy and sampled answers; with PyTorch's
    linears (``policy.kernels: aten``) sampling goes through generate, whose random stream older records follow."""
    used: list[str] = []
    monkeypatch.setattr(HFEngine, "_fast_batch", lambda self, c, p: used.append("fast") or [])
    monkeypatch.setattr(HFEngine, "_hf_batch", lambda self, c, p: used.append("hf") or [])
    for linear in (None, "aten"):
        engine = HFEngine(policy, batch_size=4, linear=linear)
        engine.generate(contexts[:4], SamplingParams(max_new_tokens=8, temperature=0.0))
        engine.generate(contexts[:4], SamplingParams(max_new_tokens=8, temperature=1.0))
    assert HFEngine(policy).linear == "onednn"
    assert used == ["fast", "fast", "fast", "hf"]


def test_processes_asking_for_the_same_untrained_answers_at_once_generate_them_once(tmp_path, monkeypatch):
    """A sweep's cells start together and ask for the same cached answers: one generates them, the others wait and read."""
    import threading
    import time
    from types import SimpleNamespace

    from core.engine import Generation, cached_generate

    monkeypatch.setenv("HINDSIGHT_CACHE", str(tmp_path))
    calls = []

    class Slow:
        batch_size = 2

        def generate(self, contexts, params):
            calls.append(len(contexts))
            time.sleep(0.5)
            return [Generation(f"answer {i}", (i, 2), True) for i in range(len(contexts))]

    policy = SimpleNamespace(model=SimpleNamespace(name_or_path=str(tmp_path), dtype=torch.float32), device=torch.device("cpu"))
    got = []
    threads = [threading.Thread(target=lambda: got.append(cached_generate(policy, Slow(), [[1, 2], [3]], SamplingParams(8, 0.0)))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [2] and len(got) == 3 and all(answers == got[0] for answers in got)
    assert [p.suffix for p in (tmp_path / "answers").iterdir() if p.suffix not in (".json", ".lock")] == []  # no temp file left


def test_the_step_hook_sees_every_token_and_ends_only_the_rows_it_stops(policy, contexts):
    """``on_token`` changes nothing while it returns True (greedy: the same tokens); a row it stops ends there, unfinished,
    and the other rows decode exactly as before (the server streams, caps and cancels through it)."""
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    picked = contexts[:4]
    plain = HFEngine(policy, batch_size=4).generate(picked, params)
    seen: dict[int, list[int]] = {i: [] for i in range(len(picked))}

    def watch(index: int, token: int) -> bool:
        seen[index].append(token)
        return True

    assert HFEngine(policy, batch_size=4).generate(picked, params, on_token=watch) == plain
    assert [tuple(seen[i]) for i in range(len(picked))] == [g.token_ids for g in plain]
    longest = max(range(len(picked)), key=lambda i: len(plain[i].token_ids))
    counts = [0] * len(picked)

    def cut(index: int, token: int) -> bool:  # ends the longest answer at its 4th token
        counts[index] += 1
        return index != longest or counts[index] < 4

    stopped = HFEngine(policy, batch_size=2).generate(picked, params, on_token=cut)  # batches of 2: indices are the contexts'
    assert stopped[longest].token_ids == plain[longest].token_ids[:4] and not stopped[longest].finished
    assert [g for i, g in enumerate(stopped) if i != longest] == [g for i, g in enumerate(plain) if i != longest]
