"""`hindsight judge A.jsonl B.jsonl`: the rule judge end to end, an LLM judge over real HTTP (both orders, verdicts mapped
back, a rerun from the cache), and one-line errors for bad files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import run
from judges.versus import JudgeResult
from simulators.profile import load_profile

from conftest import HINDSIGHT
from stub_provider import StubProvider

REPLY = re.compile(r"Reply ([AB]):\n<<<\n(.*?)\n>>>", re.DOTALL)
TERSE = """name: terse
description: I want five words at most, and never an emoji.
checks:
  - {kind: max_words, value: 5, followup: Shorter.}
  - {kind: forbid, pattern: emoji, followup: No emojis.}
"""
# file A, file B (other order; a string prompt pairs with the same text as a lone user message; extra fields are ignored)
A_ROWS = [
    {"prompt": "Capital of France?", "response": "Paris."},  # B too long → A
    {"prompt": "Capital of Italy?", "response": "Rome 🙂"},  # A has an emoji → B
    {"prompt": "Capital of Spain?", "response": "Madrid 🙂 is the capital of Spain today."},  # both fail both checks → tie
    {"prompt": [{"role": "user", "content": "Capital of Peru?"}], "response": "Lima."},  # B too long → A
]
B_ROWS = [
    {"prompt": "Capital of Peru?", "response": "The capital of Peru is Lima, on the coast.", "model": "base"},
    {"prompt": "Capital of Spain?", "response": "Madrid, the capital city of Spain 🙂"},
    {"prompt": "Capital of Italy?", "response": "Rome."},
    {"prompt": "Capital of France?", "response": "The capital of France is Paris, on the Seine."},
]


def write(path: Path, rows: list[dict], blank_after: int | None = None) -> Path:
    lines = [json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def hindsight(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HINDSIGHT, "judge", *args], capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_rule_judge_pairs_rows_by_prompt_and_writes_the_verdicts(tmp_path):
    profile = tmp_path / "terse.yaml"
    profile.write_text(TERSE)
    a, b = write(tmp_path / "a.jsonl", A_ROWS), write(tmp_path / "b.jsonl", B_ROWS, blank_after=1)
    result = hindsight(str(a), str(b), "--profile", str(profile), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 rows paired by prompt, judge rules:terse" in result.stdout and "0.62 [" in result.stdout
    record = JudgeResult.model_validate_json((tmp_path / "out" / "judge.json").read_text())
    assert [r.winner for r in record.rows] == ["A", "B", "tie", "A"]
    assert [(r.a_line, r.b_line) for r in record.rows] == [(1, 5), (2, 4), (3, 3), (4, 1)]  # the blank line counts
    assert record.rows[1].raw == ["A fails 1 (forbid emoji); B fails 0 (none)"] and record.rows[1].orders == ["B"]
    s = record.summary
    assert (s.wins, s.losses, s.ties, s.invalid, s.win_rate, s.decisive, s.swap_agreement) == (2, 1, 1, 0, 0.625, pytest.approx(2 / 3), None)
    assert s.win_low <= 0.625 <= s.win_high and record.llm_usage is None
    assert (record.matched_by, record.profile, record.persona) == ("prompt", "terse", "I want five words at most, and never an emoji.")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| A | 0.62 [" in summary and "one verdict per pair" in summary


class _Judge:
    """Prefers the shorter reply, except: always "A" for Italy (position bias) and "BOTH" (invalid) for Spain."""

    requests: list[dict] = []

    @staticmethod
    def answer(body: dict) -> tuple[str, int, int]:
        user = body["messages"][-1]["content"]
        shown = dict(REPLY.findall(user))
        text = "BOTH" if "Spain" in user else "A" if "Italy" in user else "A" if len(shown["A"]) < len(shown["B"]) else "B"
        return text, 10, 1


def test_llm_judge_over_http_asks_both_orders_and_reruns_from_the_cache(tmp_path):
    a = write(tmp_path / "a.jsonl", [{"id": k, **row} for k, row in enumerate(A_ROWS)])
    b = write(tmp_path / "b.jsonl", [{"id": 3, "prompt": "Capital of Peru?", "response": "Lima"}, *({"id": 3 - k, **row} for k, row in enumerate(B_ROWS) if k)])
    with StubProvider(_Judge.answer, _Judge.requests) as stub:
        args = [str(a), str(b), "--profile", "concise", "--judge-model", "openai/judge", "--judge-api-base", stub.base, "--out", str(tmp_path / "out")]
        first = hindsight(*args)
        assert first.returncode == 0, first.stdout + first.stderr
        asked = [dict(REPLY.findall(r["body"]["messages"][-1]["content"])) for r in _Judge.requests]
        record = JudgeResult.model_validate_json((tmp_path / "out" / "judge.json").read_text())
        again = hindsight(*args)
    assert again.returncode == 0, again.stderr
    assert len(asked) == 8 and all(load_profile("concise").description.strip() in r["body"]["messages"][0]["content"] for r in _Judge.requests)
    shown = sorted(sorted(pair.items()) for pair in asked)  # the calls go out concurrently: any arrival order
    assert shown == sorted(sorted(pair.items()) for row in record.rows for pair in ({"A": row.a, "B": row.b}, {"A": row.b, "B": row.a}))
    assert record.matched_by == "id" and [r.id for r in record.rows] == [0, 1, 2, 3] and record.judge == "pairwise:litellm:openai/judge"
    assert [r.orders for r in record.rows] == [["A", "A"], ["A", "B"], ["invalid", "invalid"], ["B", "B"]]  # the swapped order mapped back
    assert [r.winner for r in record.rows] == ["A", "tie", "invalid", "B"] and record.rows[2].raw == ["BOTH", "BOTH"]
    s = record.summary
    assert (s.wins, s.losses, s.ties, s.invalid, s.win_rate, s.swap_agreement, s.invalid_rate) == (1, 1, 1, 1, 0.5, pytest.approx(2 / 3), 0.25)
    assert (record.llm_usage["judge"].calls, record.llm_usage["judge"].prompt_tokens) == (8, 80) and "LLM judge: 8 calls" in first.stdout
    rerun = JudgeResult.model_validate_json((tmp_path / "out" / "judge.json").read_text())
    assert len(_Judge.requests) == 8 and rerun.rows == record.rows  # zero new requests: every verdict came from the cache
    assert (rerun.llm_usage["judge"].calls, rerun.llm_usage["judge"].cache_hits) == (0, 8)


def _error(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["hindsight", "judge", *args, "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        run()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    return err


@pytest.mark.parametrize(("a_text", "b_rows", "message"), [
    (None, B_ROWS, "{a}: no such file"),
    ('{"prompt": "Capital of France?", "response": "Paris."}\n{"prompt": oops}\n', B_ROWS, "{a}:2: not JSON"),
    ('{"prompt": "Capital of France?", "answer": "Paris."}\n', B_ROWS, "{a}:1: field 'response': Field required"),
    ("\n", B_ROWS, "{a}: no rows"),
    (A_ROWS, B_ROWS[1:], "{a}:4: no row with this prompt in {b}; both files must hold the same rows"),
    (A_ROWS[1:3], B_ROWS[1:], "{b}:3: no row with this prompt in {a}"),
    (A_ROWS[:1], B_ROWS, "{b}:1: no row with this prompt in {a} (and 2 more unmatched rows)"),
    ([*A_ROWS, A_ROWS[0]], B_ROWS, "{a}:5: duplicate prompt (first on line 1); give every row of both files an id"),
    ([{"id": 1, **A_ROWS[0]}], [{"id": 1, **B_ROWS[0]}], "{a}:1: id 1: the prompt differs from {b}:1"),
    ([{"id": 1, **A_ROWS[0]}], [{"id": 2, **B_ROWS[3]}], "{a}:1: no row with id 1 in {b}"),
    ([{"id": 1, **A_ROWS[0]}, {"id": 1, **A_ROWS[1]}], [{"id": 1, **B_ROWS[3]}], "{a}:2: duplicate id (first on line 1)"),
])
def test_bad_files_stop_with_one_line_naming_file_and_line(tmp_path, capsys, monkeypatch, a_text, b_rows, message):
    a, b = tmp_path / "a.jsonl", write(tmp_path / "b.jsonl", b_rows)
    if isinstance(a_text, str):
        a.write_text(a_text)
    elif a_text is not None:
        write(a, a_text)
    assert message.format(a=a, b=b) in _error(tmp_path, capsys, monkeypatch, str(a), str(b), "--profile", "concise")


def test_the_judge_needs_a_persona_and_the_rule_judge_checks(tmp_path, capsys, monkeypatch):
    a, b = write(tmp_path / "a.jsonl", A_ROWS), write(tmp_path / "b.jsonl", B_ROWS)
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\ndescription: I have no checks at all.\nchecks: []\n")
    for args, message in [
        ([], "give --profile (or --persona): the user the judge decides for"),
        (["--persona", "Wants one word."], "the rule judge decides by a profile's checks; give --profile"),
        (["--profile", str(plain)], "the rule judge decides by a profile's checks; profile 'plain' has none"),
        (["--profile", "concise", "--judge", "none"], "Invalid value for '--judge': 'none' is not one of 'rules', 'llm', 'local'"),
    ]:
        assert message in _error(tmp_path, capsys, monkeypatch, str(a), str(b), *args)
