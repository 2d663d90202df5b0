"""Simulated users: scripted, complaining, neutral (control), and an LLM user over real HTTP through litellm."""

from __future__ import annotations

from core.llm_client import LLMSettings
from harness.config import RunConfig
from simulators import SimulatorSettings, build_simulator
from simulators.neutral import NeutralSimulator, load_pool
from simulators.profile import load_profile

from stub_provider import StubProvider

PROMPT = "How do plants make food?"
SHORT = "Plants use sunlight, water and carbon dioxide to make sugar."
LONG = " ".join(["Plants make food through photosynthesis in their leaves."] * 12)


def conversation(answer: str) -> list[dict]:
    return [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": answer}]


def test_scripted_user_complains_only_about_failed_checks():
    profile = load_profile("concise")
    short, long = build_simulator(SimulatorSettings()).respond([conversation(SHORT), conversation(LONG)], profile)
    assert short.satisfied is True and short.text in profile.satisfied
    assert long.satisfied is False and long.text in profile.checks[0].followup
    again = build_simulator(SimulatorSettings()).respond([conversation(LONG)], profile)[0]
    assert again == long  # deterministic


def test_a_user_who_notices_nonsense_complains_about_loops_and_off_topic_answers_first():
    """The casual profile forbids formal words and asks for contractions only, so its plain scripted user praises gibberish (the casual cell of the
    all-profiles sweep, docs/experiments.md §11); one who notices nonsense answers a loop or an answer about something else
    with a NONSENSE line, and judges a sensible answer by the profile's checks as before."""
    from simulators.scripted import NONSENSE

    profile = load_profile("casual")
    gibberish = "ZOTHKEY SPOKEY CAPPULUS: it's when the evil sorcerer uses a Tron to take over the destbin of your moon, merr atl!"
    loop = "Plants make food from sunlight, they're making food. " * 10  # on topic (cosine 0.3 or more) but a loop
    answers = ["Plants use sunlight, water and air to make sugar, and that's their food.", gibberish, loop]
    plain = build_simulator(SimulatorSettings()).respond([conversation(a) for a in answers], profile)
    assert [r.satisfied for r in plain] == [True, True, True]  # the checks alone praise all three
    noticing = build_simulator(SimulatorSettings(notices_nonsense=True)).respond([conversation(a) for a in answers], profile)
    assert noticing[0] == plain[0]
    assert all(r.satisfied is False for r in noticing[1:])
    assert (noticing[1].text in NONSENSE["off_topic"], noticing[2].text in NONSENSE["looping"]) == (True, True)  # each told its own fault
    from core.text import Embedder

    assert Embedder().similarity([loop], [PROMPT])[0] >= 0.3  # the loop was caught as a loop, not as off topic
    formal = "Photosynthesis is, furthermore, the process by which plants convert sunlight, water and carbon dioxide into sugar; it's vital."
    (reply,) = build_simulator(SimulatorSettings(notices_nonsense=True)).respond([conversation(formal)], profile)
    assert reply.satisfied is False and reply.text in profile.checks[0].followup  # sensible but formal: the profile's complaint


def test_complaining_user_complains_whatever_the_answer():
    profile = load_profile("concise")
    replies = build_simulator(SimulatorSettings(kind="complain")).respond([conversation(SHORT), conversation(LONG)], profile)
    complaints = {line for check in profile.checks for line in check.followup}
    assert all(r.satisfied is False and r.text in complaints for r in replies)


def test_neutral_user_draws_from_the_pool_with_its_salt():
    pool = load_pool("builtin")
    a = NeutralSimulator(pool, salt="control-0").respond([conversation(LONG)] * 2, load_profile("concise"))
    assert a[0] == a[1] and a[0].text in pool and a[0].satisfied is None
    salts = {NeutralSimulator(pool, salt=f"control-{k}").respond([conversation(LONG)], load_profile("concise"))[0].text for k in range(20)}
    assert len(salts) > 5
    assert set(load_pool("unrelated")).isdisjoint(pool)


def test_token_budgets_make_room_for_a_word_minimum():
    plain = RunConfig().with_budgets(load_profile("concise").min_words())
    assert (plain.generation.max_new_tokens, plain.eval.max_new_tokens) == (96, 160)
    detailed = RunConfig().with_budgets(load_profile("detailed").min_words())
    assert detailed.generation.max_new_tokens >= 2 * 120 and detailed.eval.max_new_tokens >= 2 * 120
    fixed = RunConfig.model_validate({"generation": {"max_new_tokens": 7}}).with_budgets(500)
    assert fixed.generation.max_new_tokens == 7  # an explicit budget is kept


def test_llm_user_speaks_through_an_openai_compatible_server(monkeypatch):
    monkeypatch.setenv("SIM_KEY", "secret-123")
    with StubProvider(lambda body: ('"Too long, keep it short please."', 1, 1)) as provider:
        llm = LLMSettings(model="openai/sim", api_base=provider.base, api_key_env="SIM_KEY", retries=0)
        profile = load_profile("concise")
        reply = build_simulator(SimulatorSettings(kind="llm", llm=llm)).respond([conversation(LONG)], profile)[0]
    assert reply.text == "Too long, keep it short please." and reply.raw.startswith('"')
    sent = provider.requests[-1]
    assert sent["path"].endswith("/chat/completions") and sent["auth"] == "Bearer secret-123"
    system, user = sent["body"]["messages"]
    assert profile.description.strip() in system["content"] and "Never answer the request yourself" in system["content"]
    assert PROMPT in user["content"] and LONG in user["content"]


def test_local_user_is_the_embedded_model_with_the_same_instructions():
    simulator = build_simulator(SimulatorSettings(kind="local", model="smollm2-135m", temperature=0.0, max_tokens=16))
    replies = simulator.respond([conversation(LONG), conversation(SHORT)], load_profile("concise"))
    assert len(replies) == 2 and all(r.raw.strip() for r in replies)
    assert not simulator.policy.model.training and not any(p.requires_grad for p in simulator.policy.model.parameters())
