"""`hindsight serve` through the official `openai` client (and litellm): answers, streaming, models, the error matrix,
dynamic batching, cancellation and seeds, with the real SmolLM2 behind a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from core.engine import HFEngine, SamplingParams
from core.llm_client import LLMClient, LLMSettings, ResponseCache
from judges.backends import LiteLLMBackend
from judges.base import Pair
from judges.pairwise import PairwiseJudge, parse_verdict, summarize
from simulators.profile import load_profile

from serve_helpers import LIMITS, assert_openai_error, serving

ASK = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def served(policy):
    yield from serving(policy)


def greedy(policy, messages, tokens: int):
    return HFEngine(policy).generate([policy.encode_chat(messages)], SamplingParams(max_new_tokens=tokens, temperature=0.0))[0]


def test_a_greedy_answer_is_the_engines_and_usage_counts_its_tokens(served, client, policy):
    reply = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=8, temperature=0)
    expected = greedy(policy, ASK, 8)
    choice = reply.choices[0]
    assert choice.message.content == expected.text and choice.message.role == "assistant"
    assert choice.finish_reason == ("stop" if expected.finished else "length")
    assert reply.usage.prompt_tokens == len(policy.encode_chat(ASK)) and reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.model == "smollm2" and reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    default = client.chat.completions.create(model="smollm2", messages=ASK, temperature=0)
    assert default.usage.completion_tokens <= LIMITS.default_tokens  # no max_tokens: the server's default


def test_streaming_sends_the_same_text_in_pieces_then_usage(client):
    whole = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=24, temperature=0)
    chunks = list(client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=24, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == whole.choices[0].message.content and len(pieces) > 2
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert {c.id for c in chunks} == {chunks[0].id}


def test_models_list_and_retrieve_and_unknown_models_are_404(client):
    assert [m.id for m in client.models.list().data] == ["smollm2"]
    assert client.models.retrieve("smollm2").id == "smollm2"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=2)
    assert unknown.value.body["code"] == "model_not_found" and unknown.value.body["param"] == "model"


BAD = [  # (extra fields, param the error names)
    ({"seed": 2**70}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": LIMITS.max_tokens + 1}, "max_tokens"),
    ({"max_completion_tokens": 10**30}, "max_completion_tokens"),
    ({"n": 2}, "n"),
    ({"n": 0}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop[0]"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"user": 7}, "user"),
    ({"bogus_field": 1}, "bogus_field"),
]


@pytest.mark.parametrize("extra, param", BAD, ids=[p + "=" + str(list(e.values())[0])[:12] for e, p in BAD])
def test_every_invalid_field_is_a_400_naming_it(client, extra, param):
    default = {} if {"max_tokens", "max_completion_tokens"} & set(extra) else {"max_tokens": 2}
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2", messages=ASK, extra_body=extra, **default)
    assert_openai_error(bad.value.status_code, {"error": bad.value.body}, 400, param=param)


@pytest.mark.parametrize("messages, param", [
    ([], "messages"),
    ([{"role": "robot", "content": "hi"}], "messages[0].role"),
    ([{"role": "tool", "content": "hi", "tool_call_id": "x"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}], "messages[0].content[0]"),
    (["hello"], "messages[0]"),
])
def test_invalid_messages_are_400s_naming_the_message(client, messages, param):
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2", messages=messages, max_tokens=2)
    assert bad.value.body["param"] == param, bad.value.body


def test_text_parts_and_developer_messages_are_accepted(client):
    parts = [{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": [{"type": "text", "text": "Name one colour."}]}]
    assert client.chat.completions.create(model="smollm2", messages=parts, max_tokens=3, temperature=0).choices[0].message.content


def test_max_tokens_past_the_context_left_is_refused(client, served, policy):
    long = [{"role": "user", "content": "word " * (served.service.context - 100)}]
    left = served.service.context - len(policy.encode_chat(long))
    assert 0 < left < LIMITS.max_tokens
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2", messages=long, max_tokens=left + 1)
    assert bad.value.body["code"] == "context_length_exceeded" and f"context left after your messages ({left} of" in bad.value.body["message"]
    too_long = [{"role": "user", "content": "word " * served.service.context}]
    with pytest.raises(openai.BadRequestError) as over:
        client.chat.completions.create(model="smollm2", messages=too_long, max_tokens=1)
    assert over.value.body["code"] == "context_length_exceeded" and over.value.body["param"] == "messages"


def test_a_stop_string_ends_the_answer_before_it(client):
    explain = [{"role": "user", "content": "Explain what a rainbow is."}]
    plain = client.chat.completions.create(model="smollm2", messages=explain, max_tokens=24, temperature=0).choices[0].message.content
    stop = plain.split()[3]  # a word the answer reaches after its first ones
    cut = client.chat.completions.create(model="smollm2", messages=explain, max_tokens=24, temperature=0, stop=[stop]).choices[0]
    assert stop not in cut.message.content and plain.startswith(cut.message.content) and cut.finish_reason == "stop"


def test_a_seed_makes_sampling_reproducible(client):
    def sample(seed: int) -> str:
        return client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=12, temperature=1.0, seed=seed).choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(4)}) > 1


def test_concurrent_requests_share_one_batch_and_get_their_own_greedy_answers(served, client, policy):
    prompts = ["Name one colour.", "Name one fruit.", "What is 2 + 2?", "Say hello in French.", "Name a planet.", "Name a dog breed."]
    expected = [greedy(policy, [{"role": "user", "content": p}], 6).text for p in prompts]
    before = len(served.service.batcher.batches)
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": prompts[i]}], max_tokens=6, temperature=0)
        answers[i] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [answers[i] for i in range(len(prompts))] == expected  # batched greedy == alone
    batches = served.service.batcher.batches[before:]
    assert sum(batches) == len(prompts) and max(batches) >= 3 and len(batches) < len(prompts), batches


def test_a_client_that_goes_away_stops_its_generation(served, policy):
    batcher = served.service.batcher
    for stream in (False, True):
        cancelled, decoded = batcher.cancelled_rows, batcher.decoded
        body = {"model": "smollm2", "messages": ASK, "max_tokens": 250, "temperature": 1.0, "stream": stream}
        with httpx.Client(timeout=httpx.Timeout(0.5)) as http:
            if stream:
                with http.stream("POST", served.url + "/chat/completions", json=body) as response:
                    next(response.iter_bytes())  # the first event, then the client hangs up
            else:
                with pytest.raises(httpx.TimeoutException):  # the client gives up after half a second
                    http.post(served.url + "/chat/completions", json=body)
        deadline = time.monotonic() + 30
        while batcher.cancelled_rows == cancelled and time.monotonic() < deadline:
            time.sleep(0.1)
        assert batcher.cancelled_rows == cancelled + 1, stream
        time.sleep(1.0)
        assert batcher.decoded - decoded < 250  # it stopped well before its max_tokens
        assert batcher.pending() == 0


def test_litellm_reaches_the_served_model_and_reruns_hit_the_cache(served, policy, tmp_path):
    settings = LLMSettings(model="openai/smollm2", api_base=served.url, max_tokens=12, retries=0)
    client = LLMClient(settings, ResponseCache(tmp_path))
    served_before = served.service.completions
    text = client.complete(ASK)
    assert text == greedy(policy, ASK, 12).text and served.service.completions == served_before + 1
    usage = client.usage()
    assert (usage.calls, usage.cache_hits, usage.prompt_tokens) == (1, 0, len(policy.encode_chat(ASK)))
    assert client.complete(ASK) == text and served.service.completions == served_before + 1
    rerun = LLMClient(settings, ResponseCache(tmp_path))
    assert rerun.complete(ASK) == text and rerun.usage().calls == 0


def test_pairwise_judge_over_the_served_model_counts_every_verdict(served, tmp_path):
    client = LLMClient(LLMSettings(model="openai/smollm2", api_base=served.url, max_tokens=4, retries=0), ResponseCache(tmp_path))
    judge = PairwiseJudge(LiteLLMBackend(client))
    pairs = [Pair("How do plants make food?", "Photosynthesis turns light, water and CO2 into sugar.", "Plants eat soil. " * 8),
             Pair("Say hi.", "Hi.", "Hello there! It is wonderful to meet you today, friend!")]
    before = served.service.completions
    verdicts = judge.compare(pairs, persona=load_profile("concise").description)
    assert served.service.completions == before + 4 and client.usage().calls == 4
    for verdict in verdicts:
        assert verdict.backend == "litellm:openai/smollm2" and len(verdict.raw) == 2
        assert verdict.orders[0] == parse_verdict(verdict.raw[0])
        assert verdict.orders[1] == {"A": "B", "B": "A"}.get(parse_verdict(verdict.raw[1]), parse_verdict(verdict.raw[1]))
    summary = summarize(verdicts)
    assert summary.n == 2 and summary.wins + summary.losses + summary.ties + summary.invalid == 2
