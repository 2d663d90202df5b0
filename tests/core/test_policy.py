"""The policy and engine on the real SmolLM2: log-probs at completion positions, batched generation, padding."""

import pytest
import torch

from core.engine import HFEngine, SamplingParams
from core.policy import Policy


def test_score_matches_a_full_forward_pass(policy):
    ctx = [policy.encode_chat(policy.messages("Name a primary colour.")), policy.encode_chat(policy.messages("Say hi."))]
    completion = [policy.tokenizer.encode("Red is one.", add_special_tokens=False) + [policy.eos_token_id], policy.tokenizer.encode("Hi!", add_special_tokens=False)]
    with torch.no_grad():
        scored = policy.score(ctx, completion, full_logits=True)
        for row in range(2):
            ids = torch.tensor([ctx[row] + completion[row]])
            full = policy.model(ids).logits[0].log_softmax(-1)
            start = len(ctx[row]) - 1
            expected = [full[start + t, tok].item() for t, tok in enumerate(completion[row])]
            got = scored.logprobs[row, : len(completion[row])].tolist()
            assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-3
            assert scored.mask[row].sum().item() == len(completion[row])
    # padded positions carry nothing; logits exist only at completion positions
    assert scored.logprobs[1, len(completion[1]) :].abs().sum().item() == 0
    assert scored.logits.shape == (2, max(map(len, completion)), policy.model.config.vocab_size)


def test_greedy_batch_with_left_padding_equals_one_by_one(policy):
    engine = HFEngine(policy)
    prompts = ["What is 2 + 2?", "Write one sentence about the sea and the wind over it."]
    contexts = [policy.encode_chat(policy.messages(p)) for p in prompts]
    params = SamplingParams(max_new_tokens=12, temperature=0)
    together = engine.generate(contexts, params)
    alone = [engine.generate([c], params)[0] for c in contexts]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    for g in together:
        assert g.finished == (policy.eos_token_id in g.token_ids)
        assert g.text == policy.decode(g.token_ids)


def test_sampling_is_seeded(policy):
    engine = HFEngine(policy)
    ctx = [policy.encode_chat(policy.messages("Tell me a fun fact."))]
    params = SamplingParams(max_new_tokens=10, temperature=1.0)
    torch.manual_seed(3)
    first = engine.generate(ctx, params)[0].token_ids
    torch.manual_seed(3)
    assert engine.generate(ctx, params)[0].token_ids == first


def test_initial_policy_is_the_snapshot_taken_before_updates(fresh_policy):
    with pytest.raises(RuntimeError, match="snapshot_initial"):
        with fresh_policy.initial():
            pass
    fresh_policy.snapshot_initial()
    weight = fresh_policy.model.get_output_embeddings().weight
    before = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)  # an "update" after the snapshot
    fresh_policy.snapshot_initial()  # a second call keeps the first snapshot
    with fresh_policy.initial() as initial:
        assert initial.model is not fresh_policy.model
        assert not any(p.requires_grad for p in initial.model.parameters())
        assert torch.equal(initial.model.get_output_embeddings().weight, before)


def _mapped_from(tensor: torch.Tensor, path: str) -> bool:
    """Whether ``tensor``'s memory lies in a mapping of the file ``path`` (Linux /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in open("/proc/self/maps", encoding="utf-8"):
        span, *rest = line.split()
        start, end = (int(x, 16) for x in span.split("-"))
        if rest and rest[-1] == path and start <= address < end:
            return True
    return False


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="needs Linux /proc/self/maps")
def test_the_frozen_copy_maps_the_weights_file_while_it_holds_the_same_weights(fresh_policy):
    """Untrained: the snapshot's parameters are the weights file's pages (shared by every arm process of a run), tied
    weights stay tied, and training the live model leaves them as they were. Changed before the snapshot (a resumed
    checkpoint): a private copy of the changed weights."""
    from pathlib import Path

    path = str(next(Path(fresh_policy.model.name_or_path).glob("*.safetensors")).resolve())
    fresh_policy.snapshot_initial()
    with fresh_policy.initial() as initial:
        frozen = dict(initial.model.named_parameters())
        assert all(_mapped_from(p, path) for p in frozen.values())
        assert initial.model.get_output_embeddings().weight is initial.model.get_input_embeddings().weight
    live = dict(fresh_policy.model.named_parameters())
    assert all(live[name] is not p for name, p in frozen.items())
    before = frozen["model.norm.weight"].clone()
    with torch.no_grad():
        live["model.norm.weight"].add_(1.0)
    assert torch.equal(frozen["model.norm.weight"], before)

    changed = Policy.load(fresh_policy.settings)
    with torch.no_grad():
        changed.model.model.norm.weight.add_(1.0)
    changed.snapshot_initial()
    with changed.initial() as initial:
        assert not any(_mapped_from(p, path) for p in initial.model.parameters())
        assert torch.equal(initial.model.model.norm.weight, changed.model.model.norm.weight)
