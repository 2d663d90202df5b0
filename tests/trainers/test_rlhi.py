"""RLHI on the real SmolLM2: the DPO step moves the policy toward the chosen side, the trainer's state round-trips, and
every method runs from the CLI and writes the same records, with each interaction's update explained."""

import subprocess

import pytest
import torch

from core.engine import Generation, HFEngine
from core.interaction import Followup, Interaction
from core.records import METRIC, EvalRecord, InteractionRecord, RunInfo, SignalRecord, TrainRecord, read_jsonl
from harness.config import RunConfig
from judges.reward import Reward
from simulators.profile import load_profile
from trainers import RECIPES, RLHIConfig, RLHITrainer
from trainers.dpo import PreferenceOptimizer, PreferencePair

from conftest import HINDSIGHT
from stub_provider import StubProvider

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
    # the rewrite has at most 24 tokens, LONG about 45: fewer words, so the shorter-is-better reward keeps the pair
    assert len(first["rewrite"].split()) < len(LONG.split()) and first["reward_chosen"] > first["reward_rejected"]
    assert first["kept"] is True and first["why"] == "kept" and result.metrics["pairs"] == 1 and result.skipped is None
    assert first["chosen"] == first["rewrite"] and first["rejected"] == LONG
    assert "chosen" not in second and "rejected" not in second
    # signals.jsonl: the kept pair's tokens, rewards and DPO weight β·σ(−margin)/pairs = 0.1 · 0.5 at the first step (π = π_ref)
    pair = result.signals[0]["pair"]
    assert result.signals[1] == {} and pair["label"] == "reattempt_with_feedback" and pair["objective"] == "dpo"
    assert "".join(pair["rejected"]["tokens"]) == policy.tokenizer.decode(batch[0].response.token_ids)
    assert (pair["chosen"]["weight"], pair["rejected"]["weight"]) == (0.05, -0.05)
    assert (pair["reward_chosen"], pair["reward_rejected"]) == (round(first["reward_chosen"], 4), round(first["reward_rejected"], 4))
    assert trainer.history == ["How do I cook rice?", "Too long. I just need the short version.", "What is a noun?", "Thanks, that works."]

    state = trainer.state_dict()
    other = RLHITrainer(policy, HFEngine(policy), config, "rlhi-rewrite", max_new_tokens=24, user_at=lambda i: profile, reward=FixedReward())
    other.load_state_dict(state)
    assert (other.history, other.feedback, other.persona) == (trainer.history, trainer.feedback, trainer.persona)
    assert other.optimizer.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()


class RankReward:
    """The middle candidate is best, the last worst: distinct rewards every time, so a pair is always formed."""

    name = "rank"

    def score(self, prompts, responses, persona, profile):
        return [Reward({0: 1.0, 1: 2.0}.get(i, -float(i)), {}) for i in range(len(responses))]


def test_candidates_pair_best_against_worst(fresh_policy):
    policy = fresh_policy
    torch.manual_seed(0)  # the three sampled candidates (seeded: distinct, so the pair is not dropped as identical)
    trainer = RLHITrainer(policy, HFEngine(policy), RLHIConfig(candidates=3), "rlhi-reward", max_new_tokens=16, user_at=lambda i: None,
                          reward=RankReward())
    result = trainer.step([make_interaction(policy, 0, "Name a fruit.", "Apple.", "Thanks!", None)])
    summary = result.per_interaction[0]
    candidates = summary["candidates"]
    assert [c["reward"] for c in candidates] == [1.0, 2.0, -2.0]
    assert summary["label"] == "positive_feedback" and summary["persona"] is None  # no feedback yet: no persona
    assert len({c["text"] for c in candidates}) == 3
    assert summary["kept"] is True and result.metrics["pairs"] == 1 and result.skipped is None
    assert (summary["reward_chosen"], summary["reward_rejected"]) == (2.0, -2.0)
    assert (summary["chosen"], summary["rejected"]) == (candidates[1]["text"], candidates[2]["text"])


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_every_method_runs_from_the_cli(tmp_path, method):
    args = ["personalize", "--method", method, "-n", "2", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "1", "--max-new-tokens", "8",
            "--set", "eval.max_new_tokens=8", "--set", "eval.kl_prompts=1", "--no-control", "--no-oracle", "--simulator", "complain",
            "--candidates", "2", "--results", str(tmp_path), "--run-id", "r",
            # 8-token rewrites at the default temperature 0.6 copy the answer (an identical pair, dropped): sample hotter, and let a
            # rewrite that scores below the original through (the filter has its own tests), so that every method keeps a pair
            "--set", "rlhi.temperature=1.5", "--set", "rlhi.filter.improve=false"]
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
    # every method forms a pair here (seed 0): the update trains on something, and each kept pair says what it was
    kept = [r for r in records if r.update["kept"]]
    assert kept, [r.update["why"] for r in records]
    for r in kept:
        assert r.update["why"] == "kept" and r.update["chosen"] != r.update["rejected"]
    signals = {s.index: s for s in read_jsonl(run / "signals.jsonl", SignalRecord)}
    assert sorted(signals) == sorted(r.index for r in kept)  # one signal per kept pair, none for the others
    for r in kept:
        pair = signals[r.index].pair
        assert pair["objective"] == recipe.objective and pair["chosen"]["weight"] > 0 and signals[r.index].advantage == []
        assert pair["rejected"]["weight"] == (0.0 if recipe.objective == "sft" else -pair["chosen"]["weight"])
        if key == "rewrite":
            assert (r.update["chosen"], r.update["rejected"]) == (r.update["rewrite"], r.response)
        else:
            texts = {c["text"]: c["reward"] for c in r.update["candidates"]}
            assert texts[r.update["chosen"]] == r.update["reward_chosen"] == max(texts.values())
            assert texts[r.update["rejected"]] == r.update["reward_rejected"] == min(texts.values())
    for r in records:
        if not r.update["kept"]:
            assert "chosen" not in r.update and "rejected" not in r.update
    metrics = list(read_jsonl(run / "metrics.jsonl", METRIC))
    train = [m for m in metrics if isinstance(m, TrainRecord)]
    assert len(train) == 1 and train[0].metrics["pairs"] == sum(r.update["kept"] for r in records)
    assert ("loss" in train[0].metrics) == (train[0].skipped is None)
    assert sorted((m.arm, m.interactions) for m in metrics if isinstance(m, EvalRecord)) == [("initial", 0), ("treated", 2)]
    assert (run / "curve.png").is_file() and f"method **{method}**" in (summary := (run / "summary.md").read_text()) and "rlhi: lr 2e-05, beta 0.1" in summary


def test_control_arm_flip_and_persona_guided_inference(tmp_path, monkeypatch):
    """An RLHI run with its control arm through a flip, the profile persona (oracle) and persona-guided evaluation: each
    evaluation of the treated arm answers with the trainer's persona at that point in its system prompt."""
    import harness
    from harness.evaluate import Evaluator
    from judges.persona import persona_system

    systems: list[tuple[str, int, str | None]] = []
    run_evaluation = Evaluator.run

    def spy(self, policy, engine, *, arm, seed, interactions, system=None, **more):
        systems.append((arm, interactions, system))
        return run_evaluation(self, policy, engine, arm=arm, seed=seed, interactions=interactions, system=system, **more)

    monkeypatch.setattr(Evaluator, "run", spy)  # jobs=1: every arm runs in this process
    run = harness.personalize(
        method="rlhi-rewrite", flip_at=2, interactions=4, batch_size=2, eval_every=2, eval_prompts=1, max_new_tokens=8, control=True, oracle=False,
        jobs=1, persona="profile", eval_persona="trainer", set={"eval.max_new_tokens": 8, "eval.kl_prompts": 1}, results=tmp_path, run_id="f",
    )
    treated = sorted((r for r in run.interactions if r.arm == "treated"), key=lambda r: r.index)
    control = [r for r in run.interactions if r.arm == "control"]
    concise, detailed = load_profile("concise"), load_profile("detailed")
    assert [r.update["persona"] for r in treated] == [concise.description.strip()] * 2 + [detailed.description.strip()] * 2
    assert all(r.update["persona_source"] == "profile (oracle)" for r in treated)
    assert all(r.update["persona"] is None for r in control)  # the neutral user has no profile to read
    assert (run.config.eval.persona, run.config.rlhi.persona.source, run.config.flip_at) == ("trainer", "profile", 2)

    base = run.config.policy.system_prompt
    assert ("initial", 0, base) in systems
    seen = {(arm, n): system for arm, n, system in systems if arm != "initial"}
    assert seen == {
        ("treated", 2): persona_system(concise.description, base), ("treated", 4): persona_system(detailed.description, base),
        ("control", 2): base, ("control", 4): base,
    }
    assert concise.description.strip() in seen[("treated", 2)] and detailed.description.strip() in seen[("treated", 4)]
    # and the records of those evaluations are the ones written (one a preference: both sides of the flip)
    assert sorted({(r.arm, r.interactions) for r in run.evals}) == [("control", 2), ("control", 4), ("initial", 0), ("treated", 2), ("treated", 4)]


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
