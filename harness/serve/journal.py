"""The write-ahead journal of interactions: one JSON line each, fsynced before the request that carried it is answered.

An entry holds a sequence number, the user id, the conversation up to the answered request, the answer (with its
token ids when this server generated it), the follow-up and a digest of all of it; an entry whose digest is already
journaled (a client retrying a request) is not written again. A kill can leave a torn last line: it was never
acknowledged, and opening the journal cuts it off. What has been applied is not recorded here but in each user's
committed adapter state (harness/serve/learn.py), atomically with the weights it produced.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from core.policy import Message


def interaction_of(messages: list[Message], history: int) -> tuple[list[Message], str, str] | None:
    """(context, answer, follow-up) when the conversation ends with a request, its answer and a user message; the context
    keeps a leading system message and at most ``history`` messages before the answer, starting on a user turn."""
    if len(messages) < 3 or [m["role"] for m in messages[-3:]] != ["user", "assistant", "user"]:
        return None
    head = [messages[0]] if messages[0]["role"] == "system" else []
    body = messages[len(head) : -2][-history:]
    while body and body[0]["role"] != "user":
        body = body[1:]
    return [*head, *body], messages[-2]["content"], messages[-1]["content"]


class Journal:
    """Append-only, fsynced, deduplicated; ``by_user`` holds every entry per user in sequence order."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.digests: set[str] = set()
        self.next_seq = 0
        self.torn = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self.handle = path.open("ab")

    def _load(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        *lines, _torn = data.split(b"\n")  # the last: an unterminated last line, cut by a kill mid-write
        good = 0
        for line in lines:
            try:
                entry = json.loads(line) if line else None
            except ValueError:
                break
            good += len(line) + 1
            if entry is not None:
                self._index(entry)
        if good < len(data):  # cut the torn tail (never acknowledged) so the next entry starts on its own line
            self.torn = 1
            with self.path.open("r+b") as handle:
                handle.truncate(good)
                handle.flush()
                os.fsync(handle.fileno())

    def _index(self, entry: dict[str, Any]) -> None:
        self.by_user[entry["user"]].append(entry)
        self.digests.add(entry["digest"])
        self.next_seq = max(self.next_seq, entry["seq"] + 1)

    def append(self, user: str, context: list[Message], answer: str, tokens: list[int] | None, followup: str) -> int | None:
        """Journal one interaction (written and fsynced when this returns); None when it was journaled before."""
        digest = hashlib.sha256(json.dumps([user, context, answer, followup], ensure_ascii=False).encode()).hexdigest()
        with self.lock:
            if digest in self.digests:
                return None
            entry = {"seq": self.next_seq, "user": user, "context": context, "answer": answer, "tokens": tokens, "followup": followup,
                     "digest": digest}
            self.handle.write(json.dumps(entry, ensure_ascii=False).encode() + b"\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self._index(entry)
            return entry["seq"]

    def pending(self, user: str, applied_seq: int) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.by_user.get(user, []) if e["seq"] > applied_seq]

    def count(self, user: str) -> int:
        with self.lock:
            return len(self.by_user.get(user, []))

    def last_seq(self, user: str) -> int:
        with self.lock:
            entries = self.by_user.get(user, [])
            return entries[-1]["seq"] if entries else -1

    def users(self) -> list[str]:
        with self.lock:
            return sorted(self.by_user)

    def close(self) -> None:
        self.handle.close()
