"""The cached LLM client over real HTTP: zero new calls on rerun, what the key covers, token and cost accounting, the CLI.

A stdlib OpenAI-compatible server stands in for a paid provider (it is what lets litellm price a known model
offline); the real SmolLM2 behind `hindsight serve` is exercised in tests/harness/serve/.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.llm_client import LLMClient, LLMSettings, ResponseCache

from stub_provider import StubProvider

HELLO = [{"role": "user", "content": "Say hello."}]
BYE = [{"role": "user", "content": "Say goodbye."}]


REQUESTS: list[dict] = []


def _reverse(body: dict) -> tuple[str, int, int]:
    """The reversed last message; usage counts words of the request (×100) and a flat 1000 for the reply."""
    text = body["messages"][-1]["content"][::-1] + f" t={body.get('temperature')}"
    return text, sum(len(m["content"].split()) for m in body["messages"]) * 100, 1000


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with StubProvider(_reverse, REQUESTS) as provider:
        yield provider.base


def settings(base: str, model: str = "openai/stub", **kw) -> LLMSettings:
    return LLMSettings(model=model, api_base=base, retries=0, **kw)


def test_rerun_makes_zero_new_calls(base, tmp_path):
    cache = ResponseCache(tmp_path)
    first = LLMClient(settings(base), cache)
    start = len(REQUESTS)
    texts = [first.complete(HELLO), first.complete(BYE), first.complete(HELLO)]
    assert texts[0] == ".olleh yaS t=0.0" and texts[2] == texts[0]
    assert len(REQUESTS) == start + 2
    assert first.usage().calls == 2 and first.usage().cache_hits == 1
    assert first.usage().prompt_tokens == 400 and first.usage().completion_tokens == 2000
    rerun = LLMClient(settings(base), ResponseCache(tmp_path))  # a new process would see the same files
    assert [rerun.complete(HELLO), rerun.complete(BYE)] == texts[:2]
    assert len(REQUESTS) == start + 2
    usage = rerun.usage()
    assert (usage.calls, usage.cache_hits, usage.prompt_tokens, usage.completion_tokens, usage.cost_usd) == (0, 2, 0, 0, 0.0)
    assert len(list(tmp_path.glob("*.json"))) == 2 and not list(tmp_path.glob(".*"))


def test_key_covers_what_changes_the_output_and_never_the_api_key(base, tmp_path, monkeypatch):
    plain = settings(base)
    key = ResponseCache.key(plain, HELLO)
    changed = [plain.model_copy(update={f: v}) for f, v in
               [("model", "openai/other"), ("api_base", base + "/x"), ("temperature", 0.7), ("max_tokens", 65)]]
    keys = {ResponseCache.key(s, HELLO) for s in changed} | {ResponseCache.key(plain, BYE), key}
    assert len(keys) == 6
    same = [plain.model_copy(update={f: v}) for f, v in [("api_key_env", "K"), ("timeout_s", 1.0), ("retries", 9)]]
    assert {ResponseCache.key(s, HELLO) for s in same} == {key}

    monkeypatch.setenv("KEY_ONE", "sk-first-secret")
    monkeypatch.setenv("KEY_TWO", "sk-second-secret")
    start = len(REQUESTS)
    one = LLMClient(settings(base, api_key_env="KEY_ONE"), ResponseCache(tmp_path))
    one.complete(HELLO)
    assert REQUESTS[-1]["auth"] == "Bearer sk-first-secret"
    two = LLMClient(settings(base, api_key_env="KEY_TWO"), ResponseCache(tmp_path))
    two.complete(HELLO)
    assert len(REQUESTS) == start + 1 and two.usage().cache_hits == 1
    assert not any("secret" in p.read_text() for p in tmp_path.iterdir())
    warmer = LLMClient(settings(base, temperature=0.7), ResponseCache(tmp_path))
    assert warmer.complete(HELLO).endswith("t=0.7") and len(REQUESTS) == start + 2


def test_cost_comes_from_litellm_prices_when_it_knows_them(base, tmp_path):
    import litellm

    priced = LLMClient(settings(base, model="openai/gpt-4o-mini"), ResponseCache(tmp_path))
    priced.complete(HELLO)
    priced.complete(HELLO)
    price = litellm.model_cost["gpt-4o-mini"]
    usage = priced.usage()
    assert (usage.calls, usage.cache_hits, usage.prompt_tokens, usage.completion_tokens) == (1, 1, 200, 1000)
    assert usage.cost_usd == pytest.approx(200 * price["input_cost_per_token"] + 1000 * price["output_cost_per_token"])
    unpriced = LLMClient(settings(base), ResponseCache(tmp_path))
    unpriced.complete(HELLO)
    assert unpriced.usage().cost_usd is None and unpriced.usage().prompt_tokens == 200


def test_cache_off_calls_every_time_and_writes_nothing(base, tmp_path):
    client = LLMClient(settings(base, cache=False), ResponseCache(tmp_path))
    start = len(REQUESTS)
    client.complete(HELLO)
    client.complete(HELLO)
    assert len(REQUESTS) == start + 2 and client.usage().calls == 2 and client.usage().cache_hits == 0
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_damaged_entry_is_fetched_again(base, tmp_path):
    cache = ResponseCache(tmp_path)
    LLMClient(settings(base), cache).complete(HELLO)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text('{"text": ')
    start = len(REQUESTS)
    assert LLMClient(settings(base), cache).complete(HELLO) == ".olleh yaS t=0.0"
    assert len(REQUESTS) == start + 1 and json.loads(entry.read_text())["text"] == ".olleh yaS t=0.0"


def _hammer(root: str, worker: int, bad: multiprocessing.Value) -> None:
    cache = ResponseCache(Path(root))
    for i in range(40):
        cache.put("k", {"text": f"{worker}-{i}" * 200, "model": "m"})
        if cache.get("k") is None:
            bad.value += 1


def test_concurrent_processes_never_see_half_an_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    bad = ctx.Value("i", 0)
    workers = [ctx.Process(target=_hammer, args=(str(tmp_path), w, bad)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert [w.exitcode for w in workers] == [0, 0, 0] and bad.value == 0
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"] and ResponseCache(tmp_path).get("k") is not None


def test_cli_cache_stats_and_clear(base, tmp_path, cli):
    cache = ResponseCache(tmp_path / "llm")
    LLMClient(settings(base, model="openai/alpha"), cache).complete(HELLO)
    LLMClient(settings(base, model="openai/alpha"), cache).complete(BYE)
    LLMClient(settings(base, model="openai/beta"), cache).complete(HELLO)
    env = {"HINDSIGHT_LLM_CACHE": str(tmp_path / "llm")}
    stats = cli("cache", "stats", env=env)
    assert stats.code == 0, stats
    assert "3 entries" in stats.stdout and "openai/alpha" in stats.stdout and "openai/beta" in stats.stdout
    cleared = cli("cache", "clear", "--model", "openai/alpha", env=env)
    assert cleared.code == 0 and cleared.stdout.startswith("removed 2 entries") and "of openai/alpha" in cleared.stdout
    assert cache.stats().per_model == {"openai/beta": 1}
    everything = cli("cache", "clear", env=env)
    assert everything.stdout.startswith("removed 1 entries") and cache.stats().entries == 0
