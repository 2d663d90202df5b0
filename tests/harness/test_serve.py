"""`hindsight serve` with the real SmolLM2 over real HTTP: through litellm and the cached client, raw HTTP errors, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from core.engine import HFEngine, SamplingParams
from core.llm_client import LLMClient, LLMSettings, ResponseCache
from harness.serve import PolicyServer
from judges.backends import LiteLLMBackend
from judges.base import Pair
from judges.pairwise import PairwiseJudge, parse_verdict, summarize
from simulators.profile import load_profile

ASK = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(scope="module")
def server(policy) -> Iterator[PolicyServer]:
    server = PolicyServer(policy, model_name="smollm2", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def post(url: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_litellm_reaches_the_served_model_and_reruns_hit_the_cache(server, policy, tmp_path):
    settings = LLMSettings(model="openai/smollm2", api_base=server.url, max_tokens=12, retries=0)
    client = LLMClient(settings, ResponseCache(tmp_path))
    served, prompt_before, completion_before = server.completions, server.prompt_tokens, server.completion_tokens
    text = client.complete(ASK)
    context = policy.encode_chat(ASK)
    assert text and text == HFEngine(policy).generate([context], SamplingParams(max_new_tokens=12, temperature=0.0))[0].text  # greedy
    assert server.completions == served + 1
    usage = client.usage()
    assert (usage.calls, usage.cache_hits, usage.prompt_tokens) == (1, 0, len(context)) and usage.prompt_tokens == server.prompt_tokens - prompt_before
    assert 1 <= usage.completion_tokens == server.completion_tokens - completion_before <= 12
    assert usage.cost_usd is None  # litellm has no price for a local model
    assert client.complete(ASK) == text and server.completions == served + 1
    again = client.usage()
    assert (again.calls, again.cache_hits, again.prompt_tokens, again.completion_tokens) == (1, 1, usage.prompt_tokens, usage.completion_tokens)
    rerun = LLMClient(settings, ResponseCache(tmp_path))
    assert rerun.complete(ASK) == text and server.completions == served + 1 and rerun.usage().calls == 0


def test_requests_are_honoured_and_bad_ones_get_clear_errors(server):
    url = server.url + "/chat/completions"
    body = {"model": "any", "messages": ASK, "max_tokens": 3, "temperature": 0}
    status, first = post(url, json.dumps(body).encode())
    _, second = post(url, json.dumps(body).encode())
    assert status == 200 and first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["usage"]["completion_tokens"] <= 3 and first["usage"]["total_tokens"] == first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert first["choices"][0]["finish_reason"] == ("length" if first["usage"]["completion_tokens"] == 3 else "stop")
    assert first["model"] == "smollm2" and first["object"] == "chat.completion"
    for payload, message in [(b"{not json", "not valid JSON"), (b"{}", "'messages'"), (json.dumps({**body, "n": 2}).encode(), "n=1"),
                             (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}).encode(), "messages[0]"),
                             (json.dumps({**body, "max_tokens": 0}).encode(), "max_tokens")]:
        status, error = post(url, payload)
        assert status == 400 and message in error["error"]["message"], (payload, error)
    assert post(server.url + "/completions", b"{}")[0] == 404
    with urllib.request.urlopen(server.url + "/models", timeout=10) as response:
        assert [m["id"] for m in json.loads(response.read())["data"]] == ["smollm2"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url.removesuffix("/v1") + "/health", timeout=10)
    assert missing.value.code == 404 and "POST /v1/chat/completions" in json.loads(missing.value.read())["error"]["message"]


def test_pairwise_judge_over_the_served_model_counts_every_verdict(server, tmp_path):
    client = LLMClient(LLMSettings(model="openai/smollm2", api_base=server.url, max_tokens=4, retries=0), ResponseCache(tmp_path))
    judge = PairwiseJudge(LiteLLMBackend(client))
    pairs = [Pair("How do plants make food?", "Photosynthesis turns light, water and CO2 into sugar.", "Plants eat soil. " * 8),
             Pair("Say hi.", "Hi.", "Hello there! It is wonderful to meet you today, friend!")]
    served = server.completions
    verdicts = judge.compare(pairs, persona=load_profile("concise").description)
    assert server.completions == served + 4 and client.usage().calls == 4
    for verdict in verdicts:
        assert verdict.backend == "litellm:openai/smollm2" and len(verdict.raw) == 2
        assert verdict.orders[0] == parse_verdict(verdict.raw[0])
        assert verdict.orders[1] == {"A": "B", "B": "A"}.get(parse_verdict(verdict.raw[1]), parse_verdict(verdict.raw[1]))
    summary = summarize(verdicts)
    assert summary.n == 2 and summary.wins + summary.losses + summary.ties + summary.invalid == 2
    assert summary.invalid_rate == summary.invalid / 2


def test_cli_serve_picks_a_free_port_and_answers():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from harness.cli import run; run()", "serve", "--port", "0", "--device", "cpu", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, line = time.monotonic() + 120, ""
        while time.monotonic() < deadline and not line.startswith("serving"):
            line = process.stdout.readline()
            assert line, "serve exited before printing its address"
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")
        with urllib.request.urlopen(url + "/models", timeout=10) as response:
            assert json.loads(response.read())["data"][0]["id"] == "smollm2-135m"
    finally:
        process.terminate()
        process.wait(30)
