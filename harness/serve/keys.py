"""API keys (a keys file maps each key to one user id; admin keys apart) and per-user rate limits.

The keys file (YAML)::

    admin: 3f9c...e1            # one admin key, or a list of them
    keys:
      7a1d...90: alice          # API key: user id
      c55e...2b: bob

Keys are at least 16 printable characters, each names one user; a user id is 1-64 letters, digits, '_' or '-' (it
names the user's adapter folder). Keys are held only as SHA-256 digests, compared in constant time, and never
written to a log, an error message or a result file.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.errors import UserInputError
from core.yamlio import read_yaml

USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
KEY = re.compile(r"^[\x21-\x7e]{16,256}$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


def new_key() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Keys:
    """Who a key belongs to: ``users`` maps key digests to user ids, ``admins`` holds admin key digests."""

    users: dict[bytes, str] = field(default_factory=dict)
    admins: list[bytes] = field(default_factory=list)

    @classmethod
    def of(cls, users: dict[str, str], admins: list[str] = ()) -> Keys:
        return cls({digest(k): u for k, u in users.items()}, [digest(k) for k in admins])

    def user_of(self, key: str) -> str | None:
        d = digest(key)
        match = None
        for known, user in self.users.items():  # constant time in the key: every digest is compared
            if hmac.compare_digest(known, d):
                match = user
        return match

    def is_admin(self, key: str) -> bool:
        d = digest(key)
        return any([hmac.compare_digest(known, d) for known in self.admins])

    @property
    def user_ids(self) -> set[str]:
        return set(self.users.values())


def load_keys(path: Path) -> Keys:
    """Read and check a keys file; a UserInputError naming the file, line and field on any problem (never the key)."""
    data, tree = read_yaml(path)
    if not isinstance(data, dict):
        raise UserInputError("expected a mapping with 'keys' (API key: user id) and 'admin' (a key or a list)", path=path, line=1)
    unknown = sorted(set(map(str, data)) - {"keys", "admin"})
    if unknown:
        raise UserInputError("unknown field (allowed: admin, keys)", path=path, line=_line(tree, [unknown[0]]), field=unknown[0])
    _no_duplicates(tree, path)
    users = data.get("keys") or {}
    if not isinstance(users, dict) or not users:
        raise UserInputError("'keys' must map at least one API key to a user id", path=path, line=_line(tree, ["keys"]), field="keys")
    admins = data.get("admin") or []
    admins = [admins] if isinstance(admins, str) else admins
    if not isinstance(admins, list):
        raise UserInputError("'admin' must be a key or a list of keys", path=path, line=_line(tree, ["admin"]), field="admin")
    for n, (key, user) in enumerate(users.items()):
        where = _line(tree, ["keys", n])
        if not isinstance(key, str) or not KEY.match(key):
            raise UserInputError("an API key must be 16-256 printable characters without spaces", path=path, line=where, field="keys")
        if not isinstance(user, str) or not USER_ID.match(user):
            raise UserInputError("a user id must be 1-64 letters, digits, '_' or '-', starting with a letter or digit", path=path, line=where,
                                 field="keys")
    for n, key in enumerate(admins):
        if not isinstance(key, str) or not KEY.match(key):
            raise UserInputError("an admin key must be 16-256 printable characters without spaces", path=path, line=_line(tree, ["admin", n]),
                                 field="admin")
        if key in users:
            raise UserInputError("an admin key must not also be a user's key", path=path, line=_line(tree, ["admin", n]), field="admin")
    return Keys.of(users, admins)


def _line(tree: yaml.Node | None, loc: list) -> int | None:
    """1-based line of a mapping entry (by key name or position) or list item along ``loc``."""
    node, line = tree, 1
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            pairs = node.value
            pair = pairs[step] if isinstance(step, int) and step < len(pairs) else next((p for p in pairs if p[0].value == step), None)
            if pair is None:
                return line
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _no_duplicates(tree: yaml.Node | None, path: Path) -> None:
    for name, value in getattr(tree, "value", []):
        if name.value == "keys" and isinstance(value, yaml.MappingNode):
            seen: set[str] = set()
            for key, _ in value.value:
                if key.value in seen:
                    raise UserInputError("the same API key is listed twice", path=path, line=key.start_mark.line + 1, field="keys")
                seen.add(key.value)


class RateLimiter:
    """A token bucket per identity: ``per_minute`` requests a minute, bursts up to ``burst``."""

    def __init__(self, per_minute: float, burst: int | None = None):
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, int(per_minute)))
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, who: str) -> float | None:
        """None when ``who`` may go on; else the seconds until it may (a 429's Retry-After)."""
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self.buckets[who] = (tokens, now)
                return (1 - tokens) / self.rate
            self.buckets[who] = (tokens - 1, now)
            return None
