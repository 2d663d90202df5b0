"""RLHI on the real SmolLM2: the DPO step moves the policy toward the chosen side, the trainer's state round-trips, and
every method runs from the CLI and writes the same records, with each interaction's update explained."""

import subprocess
import sys

import pytest
import torch

from core.engine import Generation, HFEngine
from core.interaction import Followup, Interaction
from core.records import METRIC, EvalRecord, InteractionRecord, RunInfo, TrainRecord, read_jsonl
from harness.config import RunConfig
from judges.reward import Reward
from simulators.profile import load_profile
from trainers import RECIPES, RLHIConfig, RLHITrainer
from trainers.dpo import PreferenceOptimizer, PreferencePair

from stub_provider import StubProvider

HINDSIGHT = [sys.executable, "-c", "from harness.cli import run; run()"]
SHORT = "Rinse the rice, boil it in twice its volume of water, then simmer covered for 18 minutes."
LONG = ("Cooking rice is a wonderful skill that everyone should learn, and there are many ways to do it. First, measure your rice "
        "carefully, then rinse it several times until the water runs clear, which removes excess starch.")


def tokens(policy, text: str) -> list[int]:
    return policy.tokenizer.encode(text, add_special_tokens=False) + [policy.eos_token_id]


def test_dpo_step_raises_the_chosen_over_the_rejected(fresh_policy):
    policy = fresh_policy
    policy.snapshot_initial()
    optimizer = PreferenceOptimizer(policy, lr=1e-4, beta=0.1)
    pair = PreferencePair(policy.encode_chat(policy.messages("How do I cook rice?")), tokens(policy, SHORT), tokens(policy, LONG))
    first = optimizer.update([pair], "dpo")
    assert first.skipped is None
    assert first.metrics["loss"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)  # π = π_ref before any step: −log σ(0)
    assert first.metrics["margin"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        chosen, rejected = optimizer.sequence_logprobs([pair], policy)
        with policy.initial() as reference:
            ref_chosen, ref_rejected = optimizer.sequence_logprobs([pair], reference)
    assert (chosen - ref_chosen).item() - (rejected - ref_rejected).item() > 0  # the step moved the policy toward the chosen side
    second = optimizer.update([pair], "dpo")
    assert second.metrics["margin"] > 0 and second.metrics["accuracy"] == 1.0 and second.metrics["loss"] < first.metrics["loss"]
    assert optimizer.update([], "dpo").skipped == "no preference pair kept"


class FixedReward:
    """Shorter is better: a stand-in reward that makes the pairs predictable."""

    name = "fixed"

    def score(self, prompts, responses, persona, profile):
        return [Reward(-float(len(r.split())), {}) for r in responses]


def make_interaction(policy, index: int, prompt: str, answer: str, followup: str, satisfied: bool | None) -> Interaction:
    messages = policy.messages(prompt)
    return Interaction(index, prompt, messages, policy.encode_chat(messages), Generation(answer, tuple(tokens(policy, answer)), True),
                       Followup(followup, followup, satisfied))


def test_rewrite_trainer_explains_each_interaction_and_round_trips_its_state(fresh_policy):
    profile = load_profile("concise")
    policy = fresh_policy
    config = RLHIConfig(lr=1e-5, temperature=0.0)
    trainer = RLHITrainer(policy, HFEngine(policy), config, "rlhi-rewrite", max_new_tokens=24, user_at=lambda i: profile, reward=FixedReward())
    batch = [make_interaction(policy, 0, "How do I cook rice?", LONG, "Too long. I just need the short version.", False),
             make_interaction(policy, 1, "What is a noun?", "A noun names a thing.", "Thanks, that works.", True)]
    result = trainer.step(batch)
    first, second = result.per_interaction
    assert first["label"] == "reattempt_with_feedback" and first["label_source"] == "heuristic (simulator's satisfied flag)"
    assert second["label"] == "positive_feedback" and second["kept"] is False and "not rewritten" in second["why"]
    assert first["persona_source"] == "heuristic" and "Too long. I just need the short version." in first["persona"]
    assert first["rewrite"] and first["reward_rejected"] == -float(len(LONG.split()))
    assert first["kept"] == (first["reward_chosen"] >= first["reward_rejected"] and first["rewrite"] != LONG)
    if first["kept"]:
        assert first["chosen"] == first["rewrite"] and first["rejected"] == LONG and result.metrics["pairs"] == 1
    assert trainer.history == ["How do I cook rice?", "Too long. I just need the short version.", "What is a noun?", "Thanks, that works."]

    state = trainer.state_dict()
    other = RLHITrainer(policy, HFEngine(policy), config, "rlhi-rewrite", max_new_tokens=24, user_at=lambda i: profile, reward=FixedReward())
    other.load_state_dict(state)
    assert (other.history, other.feedback, other.persona) == (trainer.history, trainer.feedback, trainer.persona)
    assert other.optimizer.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()


def test_candidates_pair_best_against_worst(fresh_policy):
    policy = fresh_policy
    trainer = RLHITrainer(policy, HFEngine(policy), RLHIConfig(candidates=3), "rlhi-reward", max_new_tokens=16, user_at=lambda i: None,
                          reward=FixedReward())
    result = trainer.step([make_interaction(policy, 0, "Name a fruit.", "Apple.", "Thanks!", None)])
    summary = result.per_interaction[0]
    rewards = [c["reward"] for c in summary["candidates"]]
    assert len(rewards) == 3 and summary["label"] == "positive_feedback" and summary["persona"] is None  # no feedback yet: no persona
    if summary["kept"]:
        assert summary["reward_chosen"] == max(rewards) and summary["reward_rejected"] == min(rewards)
    else:
        assert max(rewards) == min(rewards) or "identical" in summary["why"]


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_every_method_runs_from_the_cli(tmp_path, method):
    args = ["personalize", "--method", method, "-n", "2", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "1", "--max-new-tokens", "8",
            "--set", "eval.max_new_tokens=8", "--set", "eval.kl_prompts=1", "--no-control", "--no-oracle", "--simulator", "complain",
            "--candidates", "2", "--results", str(tmp_path), "--run-id", "r"]
    result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    assert RunConfig.from_file(run / "config.yaml").method == method
    assert RunInfo.model_validate_json((run / "run.json").read_text()).status == "finished"
    records = list(read_jsonl(run / "interactions.jsonl", InteractionRecord))
    assert len(records) == 2 and all(r.method == method and r.advantage == {} for r in records)
    assert all(r.label == "reattempt_with_feedback" and r.update["label_source"] == "heuristic (simulator's satisfied flag)" for r in records)
    assert all(r.update["kept"] in (True, False) and r.update["why"] for r in records)
    recipe = RECIPES[method]
    key = "candidates" if recipe.pairs == "candidates" else "rewrite"
    assert all(key in r.update for r in records)
    metrics = list(read_jsonl(run / "metrics.jsonl", METRIC))
    train = [m for m in metrics if isinstance(m, TrainRecord)]
    assert len(train) == 1 and train[0].metrics["pairs"] == sum(r.update["kept"] for r in records)
    assert ("loss" in train[0].metrics) == (train[0].skipped is None)
    assert sorted((m.arm, m.interactions) for m in metrics if isinstance(m, EvalRecord)) == [("initial", 0), ("treated", 2)]
    assert (run / "curve.png").is_file() and f"method **{method}**" in (summary := (run / "summary.md").read_text()) and "rlhi: lr 2e-05, beta 0.1" in summary


def test_control_arm_flip_and_persona_guided_inference(tmp_path):
    """An RLHI run with its control arm through a flip, the profile persona (oracle) and persona-guided evaluation."""
    args = ["flip", "--method", "rlhi-rewrite", "-n", "4", "--batch-size", "2", "--eval-every", "4", "--eval-prompts", "1", "--max-new-tokens", "8",
            "--set", "eval.max_new_tokens=8", "--set", "eval.kl_prompts=1", "--control", "--no-oracle", "--jobs", "1", "--persona", "profile",
            "--eval-persona", "trainer", "--results", str(tmp_path), "--run-id", "f"]
    result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    records = list(read_jsonl(tmp_path / "f" / "interactions.jsonl", InteractionRecord))
    treated = sorted((r for r in records if r.arm == "treated"), key=lambda r: r.index)
    control = [r for r in records if r.arm == "control"]
    concise, detailed = load_profile("concise"), load_profile("detailed")
    assert [r.update["persona"] for r in treated] == [concise.description.strip()] * 2 + [detailed.description.strip()] * 2
    assert all(r.update["persona_source"] == "profile (oracle)" for r in treated)
    assert all(r.update["persona"] is None for r in control)  # the neutral user has no profile to read
    config = RunConfig.from_file(tmp_path / "f" / "config.yaml")
    assert (config.eval.persona, config.rlhi.persona.source, config.flip_at) == ("trainer", "profile", 2)


def test_llm_classifier_persona_and_reward_over_http(tmp_path):
    """rlhi-reward with every LLM part played by an OpenAI-compatible server: labels, persona and ratings come from it,
    and its calls are counted in run.json under the role 'rlhi'."""
    from judges import followup, persona

    def reply(body):
        system = body["messages"][0]["content"]
        if system == followup.SYSTEM:
            return "FEEDBACK", 60, 1
        if system == persona.SYSTEM:
            return "- wants one-sentence answers\n- no lists", 80, 12
        assert "wants one-sentence answers" in system  # the reward is conditioned on the inferred persona
        user = body["messages"][-1]["content"]
        return str(1 + len(user) % 10), 90, 1

    requests: list[dict] = []
    with StubProvider(reply, requests) as stub:
        args = ["personalize", "--method", "rlhi-reward", "-n", "2", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "1",
                "--max-new-tokens", "8", "--set", "eval.max_new_tokens=8", "--set", "eval.kl_prompts=1", "--no-control", "--no-oracle",
                "--simulator", "complain", "--candidates", "2", "--classifier", "llm", "--persona", "inferred", "--reward", "llm",
                "--rlhi-model", "openai/stub", "--rlhi-api-base", stub.base, "--results", str(tmp_path), "--run-id", "h"]
        result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    records = list(read_jsonl(tmp_path / "h" / "interactions.jsonl", InteractionRecord))
    assert all(r.label == "reattempt_with_feedback" and r.update["label_source"] == "litellm:openai/stub" for r in records)
    assert all(r.update["persona"] == "- wants one-sentence answers\n- no lists" and r.update["persona_source"] == "inferred (openai/stub)" for r in records)
    assert all(c["reward"] is not None and c["parts"]["raw"] for r in records for c in r.update["candidates"])
    usage = RunInfo.model_validate_json((tmp_path / "h" / "run.json").read_text()).llm_usage
    assert usage["rlhi"].calls == len(requests)
    assert usage["rlhi"].calls + usage["rlhi"].cache_hits == 2 + 1 + 4  # two labels, one persona, two candidates for each of two requests


def test_local_classifier_reads_label_token_probabilities(policy):
    from core.followups import FollowupCase
    from judges.backends import LocalBackend
    from judges.followup import WORDS, LLMClassifier

    labels = LLMClassifier(LocalBackend(policy, labels=tuple(WORDS))).judge([FollowupCase("Explain tides.", "", "Too long. Shorter please.")])
    assert labels[0].label in WORDS.values() and labels[0].source == "local:smollm2-135m"
    probs = labels[0].raw[labels[0].raw.index("(") + 1 : -1].split()
    assert [p.split("=")[0] for p in probs] == list(WORDS) and sum(float(p.split("=")[1]) for p in probs) <= 1.0
