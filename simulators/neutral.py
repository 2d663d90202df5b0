"""Neutral follow-ups: messages that say nothing about the previous answer.

One pool serves both the control arm's users and the SDPO trainer's neutral baseline, so that a control run
contrasts neutral messages with neutral messages (a fixed "Thanks." against unrelated questions would itself
be a signal). The built-in pool is small talk and bare acknowledgements: unrelated *questions* were tried
first and each one is a new request, which the hindsight prompt turns into a pull of its own (see
docs/experiments.md); they stay available as the ``unrelated`` pool. Draws are a stable hash of (salt, conversation): deterministic and resume-safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from core.errors import UserInputError
from core.interaction import Followup
from core.policy import Message
from simulators.base import last_turns
from simulators.profile import Profile

BUILTIN_POOLS = {
    "builtin": Path(__file__).parent / "data" / "neutral.txt",  # small talk and bare acknowledgements (the default)
    "unrelated": Path(__file__).parent / "data" / "unrelated.txt",  # unrelated questions (a new request each time)
}
BUILTIN_POOL = BUILTIN_POOLS["builtin"]


@cache
def load_pool(spec: str = "builtin") -> tuple[str, ...]:
    """A built-in pool (``builtin``, ``unrelated``), or a text file with one message per line."""
    path = BUILTIN_POOLS.get(spec) or Path(spec)
    if not path.is_file():
        raise UserInputError("no such neutral-pool file (one message per line)", path=path)
    pool = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(pool) < 2:
        raise UserInputError("a neutral pool needs at least two messages", path=path)
    return pool


def pick_neutral(pool: Sequence[str], key: str, salt: str) -> str:
    return pool[int(hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest(), 16) % len(pool)]


class NeutralSimulator:
    """The control arm's user: always a neutral message from the pool, whatever the answer."""

    def __init__(self, pool: Sequence[str], salt: str = "control"):
        self.pool = tuple(pool)
        self.salt = salt

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]:
        out = []
        for conversation in conversations:
            prompt, answer = last_turns(conversation)
            text = pick_neutral(self.pool, prompt + "\x00" + answer, self.salt)
            out.append(Followup(text=text, raw=text, satisfied=None))
        return out
