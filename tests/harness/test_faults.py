"""Provider faults over real HTTP: what is retried (and how long it waits), what is not, and what a run does when a user's LLM stays down."""

from __future__ import annotations

import random
import socket
import subprocess

import pytest
import yaml

from core.errors import UserInputError
from core.llm_client import LLMClient, LLMSettings, ProviderError, ResponseCache
from core.records import METRIC, InteractionRecord, RunInfo, TrainRecord, read_jsonl
from simulators.llm import LLMSimulator
from simulators.profile import load_profile

from conftest import HINDSIGHT
from stub_provider import StubProvider

HELLO = [{"role": "user", "content": "Say hello."}]


def _hello(body: dict) -> tuple[str, int, int]:
    return "Hello!", 3, 2


def client(base: str, tmp_path, sleeps: list[float], **kw) -> LLMClient:
    settings = LLMSettings(model="openai/stub", api_base=base, **{"timeout_s": 0.5, "backoff_s": 1.0, "max_backoff_s": 4.0, **kw})
    return LLMClient(settings, ResponseCache(tmp_path), sleep=sleeps.append, rng=random.Random(7))


def test_every_transient_fault_is_retried_with_jittered_backoff_and_retry_after(tmp_path):
    faults = [500, 503, (429, 1), "garbage", "empty", "hang", (429, 60), 502]
    sleeps: list[float] = []
    with StubProvider(_hello, faults=faults) as stub:
        llm = client(stub.base, tmp_path, sleeps, retries=len(faults))
        assert llm.complete(HELLO) == "Hello!"
    assert sum(stub.injected.values()) == len(faults) and len(stub.requests) == len(faults) + 1
    assert stub.injected == {"500": 1, "503": 1, "429": 2, "garbage": 1, "empty": 1, "hang": 1, "502": 1}
    usage = llm.usage()
    assert (usage.calls, usage.retries, usage.failures) == (1, len(faults), 0)
    # full jitter: attempt k waits uniform [0, min(4, 1·2^k)] from the injected generator; a 429's Retry-After wins, capped at 4
    rng = random.Random(7)
    expected = [rng.uniform(0, min(4.0, 2.0**k)) if k not in (2, 6) else None for k in range(len(faults))]
    expected[2], expected[6] = 1.0, 4.0
    assert sleeps == pytest.approx(expected)
    assert len(list(tmp_path.glob("*.json"))) == 1  # only the good reply is cached


def test_a_fault_that_outlasts_the_retries_is_a_provider_error_naming_the_model_and_url(tmp_path):
    sleeps: list[float] = []
    with StubProvider(_hello, faults=[500, 500, 500, None]) as stub:
        llm = client(stub.base, tmp_path, sleeps, retries=2)
        with pytest.raises(ProviderError) as caught:
            llm.complete(HELLO)
        assert len(stub.requests) == 3 and stub.injected == {"500": 3}
        message = str(caught.value)
        assert message.startswith(f"openai/stub at {stub.base}: ") and "after 3 attempts" in message and "\n" not in message
        assert (llm.usage().calls, llm.usage().retries, llm.usage().failures) == (0, 2, 1)
        assert not list(tmp_path.glob("*.json"))
        assert llm.complete(HELLO) == "Hello!"  # the next call starts afresh


def test_a_provider_that_is_not_listening_is_retried_then_reported(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleeps: list[float] = []
    with pytest.raises(ProviderError, match=f"127.0.0.1:{port}/v1.*after 2 attempts"):
        client(f"http://127.0.0.1:{port}/v1", tmp_path, sleeps, retries=1).complete(HELLO)
    assert len(sleeps) == 1


@pytest.mark.parametrize(("status", "hint"), [(400, "check the model name"), (401, "--api-key-env"), (403, "permissions"), (404, "ending in /v1")])
def test_settings_errors_are_not_retried_and_say_what_to_fix(tmp_path, status, hint):
    sleeps: list[float] = []
    with StubProvider(_hello, faults=[status]) as stub:
        with pytest.raises(UserInputError) as caught:
            client(stub.base, tmp_path, sleeps, retries=5).complete(HELLO)
        assert len(stub.requests) == 1 and sleeps == []
    message = caught.value.render()
    assert message.startswith(f"openai/stub at {stub.base}: HTTP {status}") and hint in message and "\n" not in message


def test_the_llm_simulator_turns_a_provider_error_into_a_failed_followup(tmp_path):
    with StubProvider(_hello, faults=[500, None]) as stub:
        simulator = LLMSimulator(client(stub.base, tmp_path, [], retries=0))
        conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"}]
        failed, fine = simulator.respond([conversation, conversation], load_profile("concise"))
    assert "injected 500" in failed.failed and "openai/stub" in failed.failed and failed.text == ""
    assert fine.failed is None and fine.text == "Hello!"


def test_failed_interactions_are_recorded_and_skipped_and_the_budget_stops_the_run(tmp_path):
    """A real run whose LLM user fails on interactions 0 and 3 (no retries): the first is recorded and left out of the update,
    the second spends the budget of 1 and stops the run with one line, exit 1. Once the provider is healthy, --resume
    finishes the run from its checkpoint after the first update."""
    with StubProvider(lambda body: ("Shorter, please.", 5, 3), faults=[500, None, None, 500]) as stub:
        args = [
            "personalize", "-n", "4", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "2", "--max-new-tokens", "12",
            "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=0", "--set", "save_checkpoint=false", "--no-control", "--no-oracle",
            "--jobs", "1", "--simulator-model", "openai/stub", "--api-base", stub.base, "--set", "simulator.llm.retries=0",
            "--fail-budget", "1", "--checkpoint-every", "2", "--results", str(tmp_path), "--run-id", "flaky",
            "--llm-concurrency", "1",  # the stub's faults go by arrival order: one request at a time
        ]
        result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=900)
        failed = RunInfo.model_validate_json((tmp_path / "flaky" / "run.json").read_text())
        requests_before_resume = len(stub.requests)
        resumed = subprocess.run([*HINDSIGHT, "personalize", "--resume", "flaky", "--results", str(tmp_path)], capture_output=True, text=True, timeout=900)
        requests_after_resume = len(stub.requests)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # the resumed run redid update 1 with the same answers: interaction 2 came from the LLM cache, 3 was asked again
    assert requests_after_resume == 5
    assert "--resume flaky" in result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    assert stub.injected == {"500": 2} and requests_before_resume == 4
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr + result.stdout
    assert "treated s0 stopped at interaction 3: 2 simulator calls failed" in result.stderr and "fail_budget 1" in result.stderr
    run = tmp_path / "flaky"
    assert failed.status == "failed" and "stopped at interaction 3" in failed.error
    assert (failed.llm_usage["simulator"].calls, failed.llm_usage["simulator"].failures) == (2, 2)
    info = RunInfo.model_validate_json((run / "run.json").read_text())
    assert info.status == "finished" and len(info.resumed) == 1 and info.error is None
    interactions = {r.index: r for r in read_jsonl(run / "interactions.jsonl", InteractionRecord)}
    assert sorted(interactions) == [0, 1, 2, 3]  # interaction 3's failed record was dropped and redone
    assert [interactions[i].failed is not None for i in (0, 1, 2, 3)] == [True, False, False, False]
    assert interactions[0].advantage == {} and interactions[0].followup == "" and interactions[1].followup == "Shorter, please."
    train = [m for m in read_jsonl(run / "metrics.jsonl", METRIC) if isinstance(m, TrainRecord)]
    assert [(t.step, t.failed) for t in train] == [(0, 1), (1, 0)] and train[0].skipped is None
    assert train[0].metrics["answer_tokens"] == interactions[1].response_tokens  # the update saw interaction 1 alone

    dry = subprocess.run([*HINDSIGHT, "personalize", "--fail-fast", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and yaml.safe_load(dry.stdout)["fail_budget"] == 0
