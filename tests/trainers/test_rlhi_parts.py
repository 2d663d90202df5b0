"""RLHI's parts without the policy: the DPO and SFT losses by hand, the quality filter's thresholds, the follow-up
classifier, persona inference and the rewards (LLM ones over real HTTP to the stub provider, a tiny real reward model)."""

import math
import subprocess
import sys

import pytest
import torch
import yaml

from core.errors import UserInputError
from core.followups import FollowupCase, followup_type
from core.llm_client import LLMClient, LLMSettings, ResponseCache
from judges.backends import LiteLLMBackend
from judges.followup import LLMClassifier, heuristic_label, parse_label
from judges.persona import heuristic_persona, infer_persona, persona_system
from judges.reward import LLMReward, ModelReward, RewardSettings, RuleReward, parse_rating
from simulators.profile import load_profile
from trainers import losses
from trainers.rlhi import FilterSettings, RLHIConfig, quality_filter

from conftest import HINDSIGHT
from stub_provider import StubProvider


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# ----- losses ------------------------------------------------------------------------------------------------
def test_dpo_loss_and_gradient_by_hand():
    chosen, rejected = leaf([-5.0, -4.0]), leaf([-7.0, -4.0])
    ref_chosen = torch.tensor([-6.0, -4.0], dtype=torch.float64)
    ref_rejected = torch.tensor([-6.0, -4.0], dtype=torch.float64)
    loss, r_chosen, r_rejected = losses.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    # pair 1: rewards 0.5·(−5+6) = 0.5 and 0.5·(−7+6) = −0.5, margin 1 → −log σ(1) = log(1 + e^−1); pair 2: margin 0 → log 2
    assert r_chosen.tolist() == pytest.approx([0.5, 0.0]) and r_rejected.tolist() == pytest.approx([-0.5, 0.0])
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2)
    loss.backward()
    # d/d chosen of −log σ(β·m) / B = −β·σ(−β·m) / B; the rejected side gets the opposite sign
    g1, g2 = 0.5 * (1 / (1 + math.e)) / 2, 0.5 * 0.5 / 2
    assert chosen.grad.tolist() == pytest.approx([-g1, -g2])
    assert rejected.grad.tolist() == pytest.approx([g1, g2])


def test_dpo_loss_with_beta_scales_the_margin():
    loss, _, _ = losses.dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)))  # margin 0.1·(1 − (−1)) = 0.2


def test_sequence_logprob_and_nll_respect_the_mask():
    logp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert losses.sequence_logprob(logp, mask).tolist() == [-3.0, -0.5]
    assert losses.nll_loss(logp, mask).item() == pytest.approx((1.5 + 0.5) / 2)  # per answer's mean token NLL, then over answers


# ----- the quality filter -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "tokens", "chosen", "rejected", "improve", "kept"),
    [
        (FilterSettings(), 10, 1.0, 1.0, True, True),  # a rewrite scoring as well as the original is kept
        (FilterSettings(), 10, 0.9, 1.0, True, False),  # below it: dropped
        (FilterSettings(improve=False), 10, 0.9, 1.0, True, True),  # the improve rule off
        (FilterSettings(), 10, 1.0, 1.0, False, False),  # best-vs-worst with no gap teaches nothing
        (FilterSettings(), 10, None, 1.0, True, False),  # no usable reward
        (FilterSettings(min_rejected_tokens=10), 10, 2.0, 1.0, True, True),
        (FilterSettings(min_rejected_tokens=10), 9, 2.0, 1.0, True, False),
        (FilterSettings(min_rejected_reward=-1), 10, 0.0, -1.0, True, True),
        (FilterSettings(min_rejected_reward=-1), 10, 0.0, -1.01, True, False),
        (FilterSettings(max_reward_gap=1), 10, 1.5, 0.5, False, True),
        (FilterSettings(max_reward_gap=1), 10, 1.51, 0.5, False, False),
    ],
)
def test_quality_filter_thresholds(settings, tokens, chosen, rejected, improve, kept):
    why = quality_filter(settings, tokens, chosen, rejected, improve=improve)
    assert (why is None) == kept, why


def test_filter_reasons_name_the_rule():
    assert "gap" in quality_filter(FilterSettings(max_reward_gap=1), 5, 3.0, 0.0, improve=False)
    assert "short" in quality_filter(FilterSettings(min_rejected_tokens=8), 5, 3.0, 0.0, improve=False)
    assert "below the original" in quality_filter(FilterSettings(), 5, 0.0, 3.0, improve=True)


def test_config_needs_an_llm_for_llm_parts():
    with pytest.raises(ValueError, match="need rlhi.llm"):
        RLHIConfig(classifier="llm")
    with pytest.raises(ValueError, match="need rlhi.llm"):
        RLHIConfig.model_validate({"persona": {"source": "inferred"}})
    RLHIConfig.model_validate({"reward": {"kind": "llm"}, "llm": {"model": "openai/x"}})


# ----- the follow-up classifier -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "label"),
    [("FEEDBACK", "reattempt_with_feedback"), ("new", "new_request"), ("[[Repeat]]", "reattempt_without_feedback"),
     ("Answer: POSITIVE.", "positive_feedback"), ("**NEW**", "new_request"), ("FEEDBACK or NEW", None), ("I think it is new", None), ("", None)],
)
def test_parse_label_is_strict(text, label):
    assert parse_label(text) == label


def test_heuristic_labels():
    ask = "How do I cook rice?"
    assert heuristic_label(ask, "Too long.", satisfied=False) == "reattempt_with_feedback"
    assert heuristic_label(ask, "Great, got it.", satisfied=True) == "positive_feedback"
    assert heuristic_label(ask, "Thanks, but shorter.", satisfied=True) == "positive_feedback"  # the simulator's own flag decides
    assert heuristic_label(ask, "how do I cook RICE") == "reattempt_without_feedback"
    assert heuristic_label(ask, "Thanks, that works.") == "positive_feedback"
    assert heuristic_label(ask, "Shorter, please. Just the key point.") == "reattempt_with_feedback"
    assert heuristic_label(ask, "What's the capital of Japan?") == "new_request"


def test_old_label_spellings_are_read():
    assert [followup_type(x) for x in ("new", "retry_feedback", "retry_no_feedback", "positive", "new_request")] == [
        "new_request", "reattempt_with_feedback", "reattempt_without_feedback", "positive_feedback", "new_request"]
    assert RLHIConfig(rewrite_labels=["retry_feedback", "new"]).rewrite_labels == ["reattempt_with_feedback", "new_request"]
    assert RLHIConfig().rewrite_labels == ["reattempt_with_feedback"]
    with pytest.raises(ValueError, match="unknown follow-up type 'maybe'"):
        RLHIConfig(rewrite_labels=["maybe"])


def test_llm_classifier_over_http_and_its_labelled_fallback(tmp_path):
    def reply(body):
        user = body["messages"][-1]["content"]
        text = "FEEDBACK" if "Too long" in user else "POSITIVE" if "Thanks" in user else "no idea"
        return text, 50, 1

    requests: list[dict] = []
    with StubProvider(reply, requests) as stub:
        client = LLMClient(LLMSettings(model="openai/stub", api_base=stub.base, max_tokens=8, retries=0), cache=ResponseCache(tmp_path))
        labels = LLMClassifier(LiteLLMBackend(client)).judge(
            [FollowupCase("Explain tides.", "", "Too long. Short version?"), FollowupCase("Explain tides.", "", "Thanks!"),
             FollowupCase("Explain tides.", "", "Who won in 1998?")])
    assert [x.label for x in labels] == ["reattempt_with_feedback", "positive_feedback", "new_request"]
    assert labels[0].source == labels[1].source == "litellm:openai/stub"
    assert labels[2].source.startswith("heuristic (keywords); litellm:openai/stub unparsed") and labels[2].raw == "no idea"
    assert len(requests) == 3 and "Explain tides." in requests[0]["body"]["messages"][-1]["content"]


# ----- persona ------------------------------------------------------------------------------------------------
def test_heuristic_persona_quotes_the_most_frequent_feedback():
    feedback = ["Too long.", "No emojis.", "Too long.", "Shorter!", "a", "b", "c"]
    persona = heuristic_persona(feedback)
    lines = persona.splitlines()
    assert len(lines) == 5 and '"Too long."' in lines[0]
    assert heuristic_persona([]) is None


def test_inferred_persona_over_http_keeps_five_points(tmp_path):
    requests: list[dict] = []
    points = "\n".join(f"- point {k}" for k in range(7))
    with StubProvider(lambda body: (points, 100, 30), requests) as stub:
        client = LLMClient(LLMSettings(model="openai/stub", api_base=stub.base, max_tokens=200, retries=0), cache=ResponseCache(tmp_path))
        persona = infer_persona(client, ["Explain tides.", "Too long. Shorter please."])
    assert persona.splitlines() == [f"- point {k}" for k in range(5)]
    prompt = requests[0]["body"]["messages"][-1]["content"]
    assert "Too long. Shorter please." in prompt and "five" in prompt
    assert infer_persona(client, []) is None


def test_persona_system_prompt():
    assert persona_system(None, "base") == "base" and persona_system(None, None) is None
    text = persona_system("- short answers", "base")
    assert text.startswith("base\n\n") and text.endswith("- short answers")


# ----- rewards ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [("7", 7), ("10", 10), ("Rating: 3/10", 3), ("**9**", 9), ("0", None), ("7 or 8", None), ("11", None)])
def test_parse_rating(text, value):
    assert parse_rating(text) == value


def test_llm_reward_over_http_sends_the_persona(tmp_path):
    requests: list[dict] = []
    with StubProvider(lambda body: ("8" if "short" in body["messages"][0]["content"] else "nonsense", 80, 1), requests) as stub:
        client = LLMClient(LLMSettings(model="openai/stub", api_base=stub.base, max_tokens=8, retries=0), cache=ResponseCache(tmp_path))
        reward = LLMReward(client)
        personal = reward.score(["Explain tides."], ["The moon pulls the sea."], "- wants short answers", None)
        generic = reward.score(["Explain tides."], ["The moon pulls the sea."], None, None)
    assert personal[0].value == 8.0 and generic[0].value is None
    assert "wants short answers" in requests[0]["body"]["messages"][0]["content"]


@pytest.fixture(scope="module")
def embedder():
    from core.text import Embedder

    return Embedder()


def test_rules_reward_prefers_compliant_relevant_answers(embedder):
    reward = RuleReward(RewardSettings(), embedder)
    prompt = "How do I cook rice?"
    short = "Rinse a cup of rice, add two cups of water, boil, then simmer covered for 18 minutes."
    long = short + (" Rice varieties differ: basmati and jasmine are long-grain and stay fluffy, while arborio is short-grain and creamy,"
                    " which suits risotto. Brown rice keeps its bran, so it needs more water and about forty-five minutes. A rice cooker"
                    " handles timing automatically, and resting the pot for five minutes afterwards lets the steam finish the grains.")
    scores = reward.score([prompt] * 3, [short, long, ""], None, load_profile("concise"))
    assert scores[0].value > scores[1].value > scores[2].value
    assert scores[0].parts["failed"] == [] and len(scores[1].parts["failed"]) == 1
    assert scores[2].parts["degenerate"] == ["empty"]
    # an echo of the feedback is short and compliant but off-topic: it must not beat a real (too long) answer
    echo = reward.score([prompt], ["My message: Too long. I just need the short version."], None, load_profile("concise"))[0]
    assert echo.parts["off_topic"] and echo.value < scores[1].value
    assert not scores[0].parts["off_topic"] and not scores[1].parts["off_topic"]
    agnostic = reward.score([prompt] * 2, [short, long], None, None)  # user-agnostic: the checks are not read
    assert "failed" not in agnostic[0].parts and agnostic[0].value == pytest.approx(scores[0].value - 1.0, abs=1e-5)


def test_reward_model_loaded_with_transformers(tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from core.models import DEFAULT_MODEL, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    model = LlamaForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "rm", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "rm")

    reward = ModelReward(str(tmp_path / "rm"))
    prompts, responses = ["Explain tides.", "Explain tides."], ["The moon pulls the sea.", "Tides are caused by the moon and the sun."]
    scores = reward.score(prompts, responses, "- wants short answers", None)
    with torch.no_grad():
        for prompt, response, got in zip(prompts, responses, scores):
            ids = tokenizer(reward.render(prompt, response, "- wants short answers"), return_tensors="pt")
            assert got.value == pytest.approx(model(**ids).logits[0, 0].item(), abs=1e-4)  # padding in the batch changes nothing
    assert reward.score(prompts[:1], responses[:1], None, None)[0].value != pytest.approx(scores[0].value)  # the persona is read
    (tmp_path / "rm" / "model.safetensors").rename(tmp_path / "rm" / "pytorch_model.bin")
    with pytest.raises(UserInputError, match=r"pytorch_model\.bin: pickled weights .*only safetensors are loaded") as refused:
        ModelReward(str(tmp_path / "rm"))  # pickled weights are refused, naming the file
    assert refused.value.render().count("\n") == 0 and str(tmp_path / "rm" / "pytorch_model.bin") in refused.value.render()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "dpo"], "method"),
        (["--method", "rlhi-reward", "--reward", "llm"], "need rlhi.llm"),
        (["--method", "rlhi-reward", "--reward", "model"], "needs a reward model"),
        (["--method", "rlhi-rewrite", "--set", "rlhi.candidates=1"], "--set rlhi.candidates=1: Input should be greater than or equal to 2"),
    ],
)
def test_bad_method_settings_are_one_line_errors(args, message):
    result = subprocess.run([*HINDSIGHT, "personalize", *args, "--dry-run"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    # (--candidates 1 itself is refused by click as a usage error: tests/harness/cli/test_inputs.py has those)


def test_dry_run_shows_the_method_and_its_settings():
    result = subprocess.run([sys.executable, "-c", "from harness.cli import run; run()", "personalize", "--method", "rlhi-reward", "--beta", "0.2",
                             "--lr", "1e-5", "--persona", "profile", "--eval-persona", "trainer", "--dry-run"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["method"] == "rlhi-reward" and config["rlhi"]["beta"] == 0.2 and config["rlhi"]["lr"] == 1e-5
    assert config["trainer"]["lr"] == 2e-5  # --lr sets the running method's rate only
    assert config["rlhi"]["persona"]["source"] == "profile" and config["eval"]["persona"] == "trainer"
