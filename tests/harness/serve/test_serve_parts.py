"""The learning server's parts that need no model: the journal (write-ahead, deduplicated, a torn tail cut), the
interaction a conversation carries, keys and rate limits."""

from __future__ import annotations

import json
import time

from harness.serve.journal import Journal, interaction_of
from harness.serve.keys import Keys, RateLimiter

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "How do I cook rice?"}, {"role": "assistant", "content": "Rinse, boil, simmer."},
                {"role": "user", "content": "Too long."}]


def test_a_conversation_carries_its_last_request_answer_and_follow_up():
    context, answer, followup = interaction_of(CONVERSATION, history=5)
    assert (answer, followup) == ("Rinse, boil, simmer.", "Too long.") and context == CONVERSATION[:4]
    context, _, _ = interaction_of(CONVERSATION, history=1)
    assert context == [CONVERSATION[0], CONVERSATION[3]]  # the system message stays, the history starts on a user turn
    context, _, _ = interaction_of(CONVERSATION, history=2)
    assert context == [CONVERSATION[0], CONVERSATION[3]]  # [assistant, user] cut to start on the user turn
    assert interaction_of(CONVERSATION[:4], history=5)[2] == "How do I cook rice?"  # a new request follows an answer too
    assert interaction_of(CONVERSATION[:5], history=5) is None  # ends on an answer
    assert interaction_of([{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}], history=5) is None


def test_the_journal_is_deduplicated_durable_and_cuts_a_torn_tail(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    assert journal.append("alice", CONVERSATION[:4], "Rinse.", [1, 2], "Too long.") == 0
    assert journal.append("alice", CONVERSATION[:4], "Rinse.", [1, 2], "Too long.") is None  # a retried request
    assert journal.append("bob", CONVERSATION[:4], "Rinse.", None, "Too long.") == 1
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"seq": 2, "user": "ali')  # a kill in the middle of a write
    reopened = Journal(path)
    assert reopened.torn == 1 and reopened.count("alice") == reopened.count("bob") == 1 and reopened.next_seq == 2
    assert path.read_bytes().endswith(b"\n") and all(json.loads(line) for line in path.read_text().splitlines())
    assert reopened.append("alice", CONVERSATION[:4], "Other.", None, "Thanks.") == 2
    assert [e["seq"] for e in reopened.pending("alice", 0)] == [2] and reopened.last_seq("alice") == 2
    reopened.close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [0, 1, 2]


def test_keys_name_one_user_each_and_admins_apart():
    keys = Keys.of({"a" * 20: "alice", "b" * 20: "bob"}, ["c" * 20])
    assert keys.user_of("a" * 20) == "alice" and keys.user_of("b" * 20) == "bob" and keys.user_of("c" * 20) is None
    assert keys.is_admin("c" * 20) and not keys.is_admin("a" * 20) and keys.user_of("a" * 19) is None
    assert not any("a" * 20 in str(v) for v in vars(keys).values())  # held as digests only


def test_rate_limits_refill_per_identity():
    limiter = RateLimiter(per_minute=120, burst=2)
    assert limiter.take("alice") is None and limiter.take("alice") is None
    wait = limiter.take("alice")
    assert wait is not None and 0 < wait <= 0.5
    assert limiter.take("bob") is None
    time.sleep(wait + 0.05)
    assert limiter.take("alice") is None
