"""Concurrent LLM calls over real HTTP (LLMClient.complete_many): faster against a slow provider, and otherwise the
same as the calls made one after another — replies and verdicts in order, cache, usage, and how an error surfaces."""

from __future__ import annotations

import time

import pytest

from core.errors import UserInputError
from core.llm_client import LLMClient, LLMSettings, ProviderError, ResponseCache
from judges.backends import LiteLLMBackend
from judges.base import Pair
from judges.pairwise import PairwiseJudge
from simulators.llm import LLMSimulator
from simulators.profile import load_profile

from stub_provider import StubProvider

DELAY = 0.2
PAIRS = [Pair(f"Question {k}: explain topic {k}.", f"short answer {k}", f"a much longer answer number {k} " * (1 + k % 3)) for k in range(16)]


def _verdict(body: dict) -> tuple[str, int, int]:
    """A deterministic judge: the shorter reply wins, ties on every fifth question; tokens counted from the request."""
    user = body["messages"][-1]["content"]
    words = len(user.split())
    if "Question 5:" in user or "Question 10:" in user or "Question 15:" in user:
        return "TIE", words, 1
    a, b = user.index("short answer"), user.index("a much longer answer")
    return ("A" if a < b else "B"), words, 1


def _client(base: str, tmp_path, concurrency: int, **kw) -> LLMClient:
    settings = LLMSettings(model="openai/stub", api_base=base, concurrency=concurrency, **{"retries": 0, "max_tokens": 4, **kw})
    return LLMClient(settings, ResponseCache(tmp_path), sleep=lambda s: None)


def test_32_judge_calls_at_concurrency_8_take_a_quarter_of_the_sequential_time_with_identical_verdicts(tmp_path):
    runs = {}
    with StubProvider(_verdict, delay=DELAY) as stub:
        _client(stub.base, tmp_path / "warm", 1).complete([{"role": "user", "content": "Question 5: warm up"}])  # litellm's import is not timed
        stub.requests.clear()
        for concurrency in (1, 8):
            stub.peak = 0
            client = _client(stub.base, tmp_path / f"cache-{concurrency}", concurrency)  # separate caches: every call is sent
            judge = PairwiseJudge(LiteLLMBackend(client))
            start = time.perf_counter()
            verdicts = judge.compare(PAIRS, persona="Prefers short answers.")
            runs[concurrency] = (time.perf_counter() - start, verdicts, client.usage(), stub.peak)
        # the caches written are the same: a rerun from either, at either concurrency, sends nothing and gives the same verdicts
        sent = len(stub.requests)
        for cache, concurrency in ((1, 8), (8, 1)):
            again = _client(stub.base, tmp_path / f"cache-{cache}", concurrency)
            assert PairwiseJudge(LiteLLMBackend(again)).compare(PAIRS, persona="Prefers short answers.") == runs[1][1]
            assert again.usage().calls == 0 and again.usage().cache_hits == 32
        assert len(stub.requests) == sent == 64
    (sequential, seq_verdicts, seq_usage, seq_peak), (concurrent, verdicts, usage, peak) = runs[1], runs[8]
    print(f"32 judge calls, {DELAY}s each: sequential {sequential:.2f}s, concurrency 8 {concurrent:.2f}s ({sequential / concurrent:.1f}x)")
    assert len(verdicts) == 16 and seq_usage.calls == 32
    assert verdicts == seq_verdicts  # winners, both orders' raw replies, in the pairs' order
    assert [v.winner for v in verdicts[:6]] == ["A", "A", "A", "A", "A", "tie"]
    assert usage == seq_usage  # calls, tokens, cost, cache hits, retries
    assert seq_peak == 1 and peak == 8
    assert sequential >= 32 * DELAY
    assert concurrent <= sequential / 4, f"concurrency 8 took {concurrent:.2f}s, sequential {sequential:.2f}s"


def _echo(body: dict) -> tuple[str, int, int]:
    return body["messages"][-1]["content"].upper(), 7, 3


@pytest.mark.parametrize("cache", [True, False])
def test_repeated_requests_in_one_batch_count_as_the_sequential_calls_would(tmp_path, cache):
    batch = [[{"role": "user", "content": w}] for w in ("hi", "bye", "hi", "hi", "yo", "bye")]
    results = {}
    for concurrency in (1, 8):
        with StubProvider(_echo) as stub:
            client = _client(stub.base, tmp_path / f"{concurrency}", concurrency, cache=cache)
            texts = client.complete_many(batch)
            results[concurrency] = (texts, client.usage(), sorted(r["body"]["messages"][0]["content"] for r in stub.requests))
    assert results[8] == results[1]
    texts, usage, sent = results[8]
    assert texts == ["HI", "BYE", "HI", "HI", "YO", "BYE"]
    assert (usage.calls, usage.cache_hits, sent) == ((3, 3, ["bye", "hi", "yo"]) if cache else (6, 0, sorted(["hi", "bye", "hi", "hi", "yo", "bye"])))


def _fails_on(*words: str, status: int = 500):
    return lambda body: status if body["messages"][-1]["content"] in words else None


def test_an_error_is_retried_then_surfaces_as_in_the_sequential_loop(tmp_path):
    batch = [[{"role": "user", "content": f"q{k}"}] for k in range(12)]
    outcomes = {}
    for concurrency in (1, 8):
        with StubProvider(_echo, fault_for=_fails_on("q11"), delay=0.02) as stub:
            client = _client(stub.base, tmp_path / f"{concurrency}", concurrency, retries=2)
            with pytest.raises(ProviderError) as failure:
                client.complete_many(batch)
            outcomes[concurrency] = (str(failure.value).replace(stub.base, "BASE"), client.usage(), stub.injected)
    assert outcomes[8] == outcomes[1]
    message, usage, injected = outcomes[8]
    assert "after 3 attempts" in message and injected == {"500": 3}
    assert (usage.calls, usage.retries, usage.failures) == (11, 2, 1)


def test_the_first_failing_request_in_input_order_is_the_one_raised(tmp_path):
    batch = [[{"role": "user", "content": f"q{k}"}] for k in range(12)]
    with StubProvider(_echo, fault_for=lambda body: {"q3": 502, "q7": 503}.get(body["messages"][-1]["content"])) as stub:
        client = _client(stub.base, tmp_path, 8, retries=1)
        with pytest.raises(ProviderError, match="502"):
            client.complete_many(batch)
        assert client.usage().failures >= 1
    with StubProvider(_echo, fault_for=_fails_on("q5", status=401)) as stub:  # a setting to fix: no retry, a UserInputError
        with pytest.raises(UserInputError, match="HTTP 401"):
            _client(stub.base, tmp_path / "401", 8, retries=3).complete_many(batch)
        assert stub.injected == {"401": 1}


def test_the_llm_simulator_records_a_failed_followup_in_place(tmp_path):
    profile = load_profile("concise")
    conversations = [[{"role": "user", "content": f"Tell me about {k}."}, {"role": "assistant", "content": f"Answer {k}."}] for k in range(6)]
    results = {}
    for concurrency in (1, 8):
        with StubProvider(lambda body: ("Shorter please.", 5, 2), fault_for=lambda body: 500 if "Answer 2." in str(body["messages"]) else None) as stub:
            client = _client(stub.base, tmp_path / f"{concurrency}", concurrency, retries=1)
            followups = LLMSimulator(client).respond(conversations, profile)
            results[concurrency] = ([(f.text, f.raw, (f.failed or "").replace(stub.base, "BASE")) for f in followups], client.usage())
    assert results[8] == results[1]
    followups, usage = results[8]
    assert [bool(failed) for _, _, failed in followups] == [False, False, True, False, False, False]
    assert followups[0][0] == "Shorter please." and (usage.calls, usage.retries, usage.failures) == (5, 1, 1)


def test_llm_concurrency_option_sets_every_llm_section():
    from harness.cli.options import RunOptions
    from harness.cli.overrides import run_overrides

    out = run_overrides(RunOptions(simulator_model="openai/u", judge_model="openai/j", rlhi_model="openai/r", llm_concurrency=3,
                                   set_=["judge.llm.concurrency=2"]))
    assert [out.get(f"{s}.llm.concurrency") for s in ("simulator", "judge", "rlhi")] == [3, 2, 3]  # an explicit --set wins
    assert out.get("trainer") is None  # no section is created
    assert run_overrides(RunOptions(judge_model="openai/j")).get("judge.llm.concurrency") is None  # default: LLMSettings' 8
    assert LLMSettings(model="openai/x").concurrency == 8


def _usereval_reply(body: dict) -> tuple[str, int, int]:
    user = body["messages"][-1]["content"]
    if "Conversation 1:" in user:
        return f"- wants {len(user) % 7} sentences", 9, 4
    return ("A" if user.index("short") < user.index("long") else "B"), 9, 1


def test_usereval_rows_are_judged_concurrently_with_the_same_result(tmp_path):
    from judges.usereval import UserEval, UserEvalRow

    rows = [UserEvalRow(id=k, prompt=f"Request {k}", response="short" if k % 2 else "long", reference="long" if k % 2 else "short",
                        history=[f"message {k % 3}", "Shorter please."] if k % 4 else None) for k in range(8)]
    results = {}
    with StubProvider(_usereval_reply, delay=0.05) as stub:
        for concurrency in (1, 8):
            stub.peak = 0
            judge, persona = (_client(stub.base, tmp_path / f"{concurrency}", concurrency, max_tokens=m) for m in (4, 200))
            result = UserEval(LiteLLMBackend(judge), persona).evaluate(rows, persona="Likes it brief.")
            results[concurrency] = (result.model_dump(), judge.usage(), persona.usage(), stub.peak > 1)
    assert results[8][:3] == results[1][:3] and results[8][3] and not results[1][3]
    result, judge_usage, persona_usage, _ = results[8]
    assert persona_usage.calls == 3 and judge_usage.calls == 8 * 3 * 2  # three distinct histories; three axes, both orders
    assert [r["verdicts"]["personalization"] for r in result["rows"]] == ["B", "A"] * 4


def test_rlhi_rewards_of_a_batch_go_out_together_with_the_per_interaction_rewards(tmp_path):
    from types import SimpleNamespace

    from judges.reward import LLMReward
    from trainers.rlhi import RLHITrainer

    def rate(body: dict) -> tuple[str, int, int]:
        return str(1 + len(body["messages"][-1]["content"]) % 10), 9, 1

    batch = [SimpleNamespace(prompt=f"Request {k}", index=k) for k in range(4)]
    requests = [(i, [f"answer {i.index}.{m}" * (m + 1) for m in range(4)]) for i in batch]
    with StubProvider(rate, delay=0.05) as stub:
        out = {}
        for concurrency in (1, 8):
            stub.peak = 0
            client = _client(stub.base, tmp_path / f"{concurrency}", concurrency)
            trainer = SimpleNamespace(reward=LLMReward(client), recipe=SimpleNamespace(personalized_reward=True), persona="Brief.",
                                      user_at=lambda index: None)
            trainer._rewards = lambda prompts, texts, index, t=trainer: RLHITrainer._rewards(t, prompts, texts, index)
            out[concurrency] = (RLHITrainer._rewards_each(trainer, requests), client.usage(), stub.peak)
    assert out[8][:2] == out[1][:2] and out[1][2] == 1 and out[8][2] == 8  # 16 ratings in one batch, 8 at a time
    assert [len(r) for r in out[8][0]] == [4] * 4 and all(r.value is not None for rs in out[8][0] for r in rs)
