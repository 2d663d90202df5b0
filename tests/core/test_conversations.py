"""Conversation import: every bad record reported with its line and skipped, filters, tuples, follow-up types, stats."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.conversations import ImportSettings, import_stats, load_tuples, read_conversations, tuples_of
from core.errors import UserInputError
from core.followups import FOLLOWUP_TYPES, FollowupCase
from judges.followup import HeuristicClassifier

from conftest import DATA, HINDSIGHT

SAMPLE = DATA / "wildchat_sample.jsonl"
# line → reason code of every bad record in the sample file (written with these on purpose)
BAD = {4: "empty_turn", 8: "bad_role", 12: "turn_too_long", 16: "not_json", 20: "not_object", 25: "no_turns", 29: "bad_content",
       33: "order", 37: "too_few_messages", 41: "bad_turn", 45: "order"}


def test_the_sample_file_meets_the_brief_and_every_bad_record_is_reported_with_its_line():
    result = load_tuples(str(SAMPLE), classifier=HeuristicClassifier())
    assert {s.line: s.code for s in result.skipped} == BAD
    assert {s.kind for s in result.skipped if s.code in ("turn_too_long", "too_few_messages")} == {"filtered"}
    lines = SAMPLE.read_text(encoding="utf-8").split("\n")
    assert result.records == sum(1 for line in lines if line.strip()) == 48  # the blank line is not a record
    assert len(result.conversations) == 37 and len({c.user for c in result.conversations if c.user}) == 8
    assert {t.followup_type for t in result.tuples} == set(FOLLOWUP_TYPES)
    stats = import_stats(result, "heuristic")
    assert stats.tuples == 43 and stats.users == 8 and stats.conversations_without_user == 2
    assert stats.invalid["order"] == 2 and stats.filtered == {"turn_too_long": 1, "too_few_messages": 1}
    assert [s["line"] for s in stats.skipped] == sorted(BAD)
    assert stats.conversations_per_user == {"min": 2, "median": 3, "max": 10} and stats.languages == {"English": 35, "Spanish": 2}


def test_junk_never_stops_the_import(tmp_path):
    path = tmp_path / "junk.jsonl"
    good = {"conversation": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}
    path.write_bytes(b"\xff\xfe not utf-8\n" + b'"just a string"\n' + b"[[[[" * 5000 + b"\n" + b"null\n"
                     + json.dumps({"messages": [{"role": "user", "content": "hi", "extra": 1}] * 2}).encode() + b"\n"
                     + json.dumps({"conversation": [{"role": "user"}, {"role": "assistant", "content": "x"}]}).encode() + b"\n"
                     + json.dumps(good).encode() + b"\n")
    result = load_tuples(str(path))
    assert [(s.line, s.code) for s in result.skipped] == [(1, "not_utf8"), (2, "not_object"), (3, "not_json"), (4, "not_object"), (5, "order"), (6, "bad_content")]
    assert [c.line for c in result.conversations] == [7] and len(result.tuples) == 1 and result.tuples[0].followup == "c"


def test_missing_file_and_missing_datasets_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match="no such conversation file"):
        read_conversations(str(tmp_path / "nope.jsonl"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed (it may be here): hf: says so in one line
    with pytest.raises(UserInputError, match=r"^hf:allenai/WildChat-1M needs the `datasets` package") as missing:
        read_conversations("hf:allenai/WildChat-1M")
    assert "\n" not in missing.value.render()


def test_hf_source_reads_a_dataset_through_datasets(tmp_path, monkeypatch):
    """hf:NAME[:SPLIT] for real: `datasets` loads a local dataset folder (no hub), streamed, and its rows are read as the
    same JSONL lines would be; a split it lacks is a one-line error."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    good = [json.loads(line) for n, line in enumerate(SAMPLE.read_text().splitlines(), start=1) if line.strip() and n not in BAD]
    rows = [{"conversation": r["conversation"]} for r in good if "conversation" in r][:6]
    folder = tmp_path / "chats"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "test.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    local = load_tuples(str(folder / "train.jsonl"))
    hub = load_tuples(f"hf:{folder}:train")
    assert hub.source == f"hf:{folder}:train" and hub.records == len(rows) == 6
    assert [c.messages for c in hub.conversations] == [c.messages for c in local.conversations] and local.conversations
    assert [(t.request, t.answer, t.followup) for t in hub.tuples] == [(t.request, t.answer, t.followup) for t in local.tuples] and hub.tuples
    assert load_tuples(f"hf:{folder}:test").records == 1
    with pytest.raises(UserInputError, match=rf"^hf:{folder}:nosplit: could not load"):
        read_conversations(f"hf:{folder}:nosplit")


def test_history_is_the_last_messages_and_starts_on_a_user_turn():
    turns = [{"conversation_hash": "x", "conversation": [{"role": "user" if k % 2 == 0 else "assistant", "content": f"m{k}"} for k in range(9)]}]
    from core.conversations import parse_record

    conversation = parse_record(turns[0], 1)
    tuples = tuples_of(conversation, context_messages=5)
    assert [(t.turn, t.answer, t.followup) for t in tuples] == [(1, "m1", "m2"), (3, "m3", "m4"), (5, "m5", "m6"), (7, "m7", "m8")]
    assert [m["content"] for m in tuples[-1].history] == ["m2", "m3", "m4", "m5", "m6"]
    assert [m["content"] for m in tuples_of(conversation, context_messages=4)[-1].history] == ["m4", "m5", "m6"]  # cut to a user turn
    assert [m["content"] for m in tuples[0].history] == ["m0"] and tuples[0].request == "m0"


def test_filters_language_length_and_limit():
    english = read_conversations(str(SAMPLE), ImportSettings(languages=["english"]))
    assert len(english.conversations) == 35 and sum(s.code == "language" for s in english.skipped) == 2
    short = read_conversations(str(SAMPLE), ImportSettings(max_conversation_chars=300, max_turn_chars=100_000))
    assert all(sum(len(m["content"]) for m in c.messages) <= 300 for c in short.conversations)
    assert any(s.code == "conversation_too_long" for s in short.skipped) and not any(s.code == "turn_too_long" for s in short.skipped)
    assert read_conversations(str(SAMPLE), ImportSettings(max_conversations=5)).records == 5
    assert len(read_conversations(str(SAMPLE), ImportSettings(min_messages=5)).conversations) < 37


@pytest.mark.parametrize(("request_", "followup", "label"), [
    ("Summarize Hamlet.", "Way too long. Two sentences max.", "reattempt_with_feedback"),
    ("Summarize Hamlet.", "Summarize Hamlet.", "reattempt_without_feedback"),
    ("Summarize Hamlet.", "regenerate", "reattempt_without_feedback"),
    ("Summarize Hamlet.", "Perfect, thank you!", "positive_feedback"),
    ("Summarize Hamlet.", "Thanks! Now write a haiku about it.", "new_request"),
    ("Summarize Hamlet.", "What is the capital of Peru?", "new_request"),
])
def test_heuristic_classifier(request_, followup, label):
    assert HeuristicClassifier().classify([FollowupCase(request_, "an answer", followup)]) == [label]


def test_stats_command_lists_every_skipped_record():
    done = subprocess.run([*HINDSIGHT, "data", "stats", str(SAMPLE)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "48 records → 37 conversations kept, 11 skipped (9 invalid, 2 filtered)" in done.stdout
    for line in BAD:
        assert f"  line {line}: " in done.stdout
    assert "line 16: invalid: not JSON" in done.stdout and "tuples: 43" in done.stdout
    as_json = subprocess.run([*HINDSIGHT, "data", "stats", str(SAMPLE), "--json", "--language", "English"], check=False, capture_output=True, text=True, timeout=120)
    stats = json.loads(as_json.stdout)
    assert stats["conversations"] == 35 and stats["filtered"]["language"] == 2 and sum(stats["followup_types"].values()) == stats["tuples"]
    missing = subprocess.run([*HINDSIGHT, "data", "stats", "nope.jsonl"], check=False, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "nope.jsonl: no such conversation file" in missing.stderr
