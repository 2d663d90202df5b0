"""Model specs, GGUF conversion into the safetensors cache, and LoRA training on the real SmolLM2."""

import os
import subprocess

import pytest
import torch

from core.errors import UserInputError
from core.models import embedded_gguf, resolve_model
from core.policy import LoraSettings, Policy, PolicySettings
from trainers.sdpo import SDPOConfig, SDPOTrainer

from builders import ANSWER, make_interaction
from conftest import HINDSIGHT


def test_model_specs_resolve_or_say_what_is_wrong(tmp_path):
    assert (resolve_model("smollm2-135m") / "model.safetensors").is_file()
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(UserInputError, match="no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(UserInputError, match="not a model folder"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserInputError, match="not an embedded model"):
        resolve_model("no-such-model")


def test_a_gguf_file_is_converted_once_into_the_cache(tmp_path):
    """The real conversion (dequantize, rebuild without the GGUF marker, save safetensors), then a cache hit."""
    env = {**os.environ, "HINDSIGHT_CACHE": str(tmp_path)}
    gguf = str(embedded_gguf("smollm2-135m"))
    first = subprocess.run([*HINDSIGHT, "models", "warm", gguf], capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    [folder] = list((tmp_path / "models").iterdir())
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    again = subprocess.run([*HINDSIGHT, "models", "warm", gguf], capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and weights.stat().st_mtime_ns == stamp  # not converted twice
    converted = Policy.load(PolicySettings(model=str(folder), device="cpu"))
    embedded = Policy.load(PolicySettings(device="cpu"))
    ids = torch.tensor([embedded.encode_chat(embedded.messages("Name a colour."))])
    with torch.no_grad():
        assert torch.allclose(converted.model(ids).logits, embedded.model(ids).logits, atol=1e-5)


def test_lora_trains_only_the_adapter_and_round_trips(tmp_path):
    torch.set_num_threads(1)
    policy = Policy.load(PolicySettings(device="cpu", lora=LoraSettings(r=4, alpha=8)))
    assert policy.uses_adapter
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in policy.model.named_parameters() if not p.requires_grad}
    interaction = make_interaction(policy, "How do I cook rice?", ANSWER, "Way too long. One sentence, please.")
    context, completion = [interaction.context_ids], [list(interaction.response.token_ids)]
    with torch.no_grad():
        base = policy.score(context, completion).logprobs
    trainer = SDPOTrainer(policy, SDPOConfig(lr=1e-2), seed=0)
    for _ in range(2):  # LoRA's B starts at zero: the first update moves B, the second makes the output move
        assert trainer.step([interaction]).skipped is None
    assert all(torch.equal(p, frozen_before[n]) for n, p in policy.model.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        trained = policy.score(context, completion).logprobs
        with policy.initial() as initial:  # the adapter switched off is the untrained model
            assert torch.allclose(initial.score(context, completion).logprobs, base, atol=1e-5)
    assert not torch.allclose(trained, base, atol=1e-4)
    policy.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and not (tmp_path / "adapter" / "model.safetensors").exists()
    reloaded = Policy.load(PolicySettings(model=str(tmp_path / "adapter"), device="cpu"))
    with torch.no_grad():
        assert torch.allclose(reloaded.score(context, completion).logprobs, trained, atol=1e-4)


def test_evaluation_kl_under_lora_compares_the_adapter_on_with_the_adapter_off():
    """The current policy is scored with its adapter, the initial one without: KL 0 before any update, above 0 after one."""
    from core.engine import HFEngine
    from core.text import Embedder
    from harness.config import EvalSettings
    from harness.evaluate import Evaluator, Preference
    from simulators.profile import load_profile

    torch.set_num_threads(1)
    policy = Policy.load(PolicySettings(device="cpu", lora=LoraSettings(r=4, alpha=8)))
    evaluator = Evaluator([Preference(load_profile("concise"))], ["How do I cook rice?", "Name a colour."],
                          EvalSettings(max_new_tokens=8, kl_prompts=2, cache_untrained=False), Embedder())

    def kl() -> float:
        [record], _ = evaluator.run(policy, HFEngine(policy), arm="treated", seed=0, interactions=0)
        return record.kl

    assert kl() == 0.0  # LoRA's B starts at zero: the adapter changes nothing yet
    trainer = SDPOTrainer(policy, SDPOConfig(lr=1e-2), seed=0)
    assert trainer.step([make_interaction(policy, "How do I cook rice?", ANSWER, "Way too long. One sentence, please.")]).skipped is None
    assert kl() > 1e-6
