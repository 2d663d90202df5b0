"""UserEval over real HTTP: a scripted OpenAI-compatible judge stands in for a paid one (each axis answered by its own
rule, read off the prompt it receives), then the real SmolLM2 behind `hindsight serve`; the CLI end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from core.llm_client import LLMClient, LLMSettings, ResponseCache
from harness.serve import serve_policy
from judges.backends import LiteLLMBackend
from judges.usereval import AXES, PERSONA_SYSTEM, UserEval, UserEvalResult, UserEvalRow, persona_messages
from simulators.profile import load_profile

from conftest import HINDSIGHT
from stub_provider import StubProvider

REPLY = re.compile(r"Reply ([AB]):\n<<<\n(.*?)\n>>>", re.S)
PERSONA = "Wants answers of one short sentence."
HISTORY = [[{"role": "user", "content": "What is DNS?"}, {"role": "assistant", "content": "DNS maps names to addresses, and..."},
            {"role": "user", "content": "Way too long. One sentence next time."}], "Shorter please."]
ROWS = [
    {"id": 1, "prompt": "Capital of France?", "response": "Paris.", "reference": "The capital of France is Paris, a city on the Seine.", "history": HISTORY},
    {"id": 2, "prompt": "Capital of Italy?", "response": "It is a lovely country with many old cities.", "reference": "Rome.", "history": HISTORY},
    {"id": 3, "prompt": [{"role": "user", "content": "Capital of Spain?"}], "response": "Madrid, I think.", "reference": "Madrid."},
]


class _Judge:
    """Answers by axis: persona requests get PERSONA; personalization picks the shorter reply (and checks that the
    persona reached it); instruction-following picks the reply naming a capital, TIE if both or neither do; overall always
    says "A" (a position-biased judge) except "BOTH" (invalid) for Spain."""

    requests: list[dict] = []

    @staticmethod
    def answer(messages: list[dict]) -> str:
        system, user = messages[0]["content"], messages[-1]["content"]
        if system == PERSONA_SYSTEM:
            return PERSONA
        shown = dict(REPLY.findall(user))
        if system.startswith(AXES["personalization"][:60]):
            assert PERSONA in system or load_profile("concise").description.strip() in system
            return "A" if len(shown["A"]) < len(shown["B"]) else "B"
        if system == AXES["instruction_following"]:
            named = {k for k, text in shown.items() if re.search(r"Paris|Rome|Madrid", text)}
            return named.pop() if len(named) == 1 else "TIE"
        assert system.startswith(AXES["overall"][:60])
        return "BOTH" if "Spain" in user else "A"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with StubProvider(lambda body: (_Judge.answer(body["messages"]), 5, 1), _Judge.requests) as judge:
        yield judge.base


def test_three_axes_both_orders_and_a_persona_from_the_history(base, tmp_path):
    client = LLMClient(LLMSettings(model="openai/judge", api_base=base, retries=0), ResponseCache(tmp_path))
    persona_client = LLMClient(LLMSettings(model="openai/judge", api_base=base, retries=0, max_tokens=200), ResponseCache(tmp_path))
    rows = [UserEvalRow.model_validate(r) for r in ROWS]
    result = UserEval(LiteLLMBackend(client), persona_client).evaluate(rows, persona=load_profile("concise").description)
    assert persona_client.usage().calls == 1  # the two rows share a history: summarized once
    sent = persona_messages(HISTORY)[1]["content"]
    assert "User: Way too long. One sentence next time." in sent and "Conversation 2:\nShorter please." in sent
    assert [r.persona for r in result.rows[:2]] == [PERSONA, PERSONA] and result.rows[2].persona == load_profile("concise").description
    assert [r.verdicts["personalization"] for r in result.rows] == ["A", "B", "B"]
    assert [r.verdicts["instruction_following"] for r in result.rows] == ["tie", "B", "tie"]
    assert [r.verdicts["overall"] for r in result.rows] == ["tie", "tie", "invalid"]  # "A" in both orders is a position bias → tie
    assert result.rows[2].raw["overall"] == ["BOTH", "BOTH"] and result.rows[0].raw["overall"] == ["A", "A"]
    p, i, o = result.axes["personalization"], result.axes["instruction_following"], result.axes["overall"]
    assert (p.wins, p.losses, p.win_rate, p.swap_agreement) == (1, 2, pytest.approx(1 / 3), 1.0) and p.win_low <= p.win_rate <= p.win_high
    assert (i.wins, i.losses, i.ties, i.win_rate) == (0, 1, 2, pytest.approx(1 / 3))
    assert (o.ties, o.invalid, o.win_rate, o.swap_agreement, o.invalid_rate) == (2, 1, 0.5, 0.0, pytest.approx(1 / 3))
    assert client.usage().calls == 3 * 3 * 2  # three axes, both orders


def test_usereval_command_writes_win_rates_and_reruns_from_the_cache(base, tmp_path):
    rows = tmp_path / "turns.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    args = [*HINDSIGHT, "usereval", str(rows), "--judge-model", "openai/judge-cli", "--judge-api-base", base, "--profile", "concise",
            "--out", str(tmp_path / "out")]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert first.returncode == 0, first.stdout + first.stderr
    assert "personalization" in first.stdout and "instruction_following" in first.stdout and "overall" in first.stdout
    result = UserEvalResult.model_validate_json((tmp_path / "out" / "usereval.json").read_text())
    assert result.judge == "usereval:litellm:openai/judge-cli" and [r.id for r in result.rows] == [1, 2, 3]
    assert result.axes["personalization"].win_rate == pytest.approx(1 / 3) and result.axes["overall"].invalid == 1
    assert (result.llm_usage["judge"].calls, result.llm_usage["persona"].calls) == (18, 1)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| personalization | 0.33 [" in summary and "| overall | 0.50" in summary
    served = len(_Judge.requests)
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rerun = UserEvalResult.model_validate_json((tmp_path / "out" / "usereval.json").read_text())
    assert rerun.axes == result.axes and len(_Judge.requests) == served  # zero new calls: every reply came from the cache
    assert [(u.calls, u.cache_hits) for u in rerun.llm_usage.values()] == [(0, 18), (0, 1)]


def test_usereval_rejects_bad_rows_in_one_line(base, tmp_path):
    cases = [
        ('{"prompt": "x", "response": "a"}\n', [], "field 'reference'"),
        ('{"prompt": "x", "response": "a", "reference": "b"}\n', [], "row 1 has no history and no persona was given"),
        ("not json\n", [], "turns.jsonl:1: not JSON"),
    ]
    for text, extra, message in cases:
        rows = tmp_path / "turns.jsonl"
        rows.write_text(text)
        result = subprocess.run([*HINDSIGHT, "usereval", str(rows), "--judge-api-base", base, "--out", str(tmp_path / "o"), *extra],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_served_smollm2_judges_every_axis_and_writes_a_persona(policy, tmp_path):
    with serve_policy(policy, "smollm2") as server:
        client = LLMClient(LLMSettings(model="openai/smollm2", api_base=server.url, max_tokens=4, retries=0), ResponseCache(tmp_path))
        persona_client = LLMClient(LLMSettings(model="openai/smollm2", api_base=server.url, max_tokens=24, retries=0), ResponseCache(tmp_path))
        result = UserEval(LiteLLMBackend(client), persona_client).evaluate([UserEvalRow.model_validate(ROWS[0])])
    assert result.rows[0].persona and server.service.completions == 1 + 3 * 2
    for axis, summary in result.axes.items():
        assert summary.wins + summary.losses + summary.ties + summary.invalid == 1
        assert result.rows[0].verdicts[axis] in ("A", "B", "tie", "invalid") and len(result.rows[0].raw[axis]) == 2
