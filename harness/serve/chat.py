"""`hindsight chat`'s session: one person's conversation with a learning server, over the OpenAI API (official client).

Each message goes out with the conversation so far, so the server sees (request, answer, this message) and journals it
as an interaction for the key's user; ``wait_for_update`` then follows the server's ``/v1/learning`` until the
interaction is applied, and says how far the adapter moved (KL to the base model). Without a server URL the session
starts one in-process (``embedded``): the model with a LoRA slot, a learner updating after every message, a key made
for this one user.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.policy import Message


@dataclass
class Update:
    """What the server did with the person's last message: its type, whether it trained, and the KL before and after."""

    applied: bool
    trained: bool
    followup_type: str | None
    kl_before: float
    kl: float
    updates: int
    pending: int


@dataclass
class ChatSession:
    url: str
    key: str
    user: str
    model: str
    max_tokens: int = 128
    messages: list[Message] = field(default_factory=list)
    server: Any = None  # the embedded ServerThread, stopped by close()

    def __post_init__(self) -> None:
        import openai

        self.client = openai.OpenAI(base_url=self.url, api_key=self.key, max_retries=2, timeout=600)

    def send(self, text: str) -> Iterator[str]:
        """Stream the answer to ``text`` (the conversation so far goes with it); the answer joins the conversation."""
        self.messages.append({"role": "user", "content": text})
        pieces = []
        stream = self.client.chat.completions.create(model=self.model, messages=self.messages, max_tokens=self.max_tokens, stream=True,
                                                     user=self.user, temperature=0.7)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                yield pieces[-1]
        self.messages.append({"role": "assistant", "content": "".join(pieces)})

    def stats(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/learning", headers={"Authorization": f"Bearer {self.key}"}, timeout=30)
        response.raise_for_status()
        return response.json()

    def wait_for_update(self, before: dict[str, Any], timeout: float = 120) -> Update:
        """Follow the server until every interaction journaled so far is applied (or ``timeout``), then say what changed."""
        deadline = time.monotonic() + timeout
        stats = self.stats()
        while stats["applied"] < stats["interactions"] and time.monotonic() < deadline:
            time.sleep(0.2)
            stats = self.stats()
        applied = stats["applied"] > before["applied"]
        trained = stats["updates"] > before["updates"]
        kind = (stats.get("last_update") or {}).get("followup_type") if trained else _skipped_kind(before, stats)
        return Update(applied, trained, kind, before["kl"], stats["kl"], stats["updates"], stats["interactions"] - stats["applied"])

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def _skipped_kind(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    grown = [k for k, v in after["skipped"].items() if v > before["skipped"].get(k, 0)]
    return grown[0] if grown else None


def embedded(user: str, model: str, state: Path, device: str = "auto", threads: int | None = None, lr: float = 2e-4,
             max_tokens: int = 128) -> ChatSession:
    """A session with its own learning server on 127.0.0.1: ``user``'s adapter in ``state`` (kept across sessions)."""
    from harness.serve.keys import Keys, new_key
    from harness.serve.learn import Learner, LearnSettings
    from harness.serve.server import ServerThread, load_policy, make_service, model_name
    from harness.serve.service import Limits

    key = new_key()
    policy = load_policy(model, device, threads, lora=True)
    learner = Learner(policy, LearnSettings(state=state, batch=1, idle=0, lr=lr))
    service = make_service(policy, model_name(model), Limits(default_tokens=max_tokens), keys=Keys.of({key: user}), learner=learner)
    server = ServerThread(service).start()
    return ChatSession(server.url, key, user, service.model_name, max_tokens=max_tokens, server=server)


def advantage_style(value: float, scale: float) -> str:
    """A rich style for a token's advantage: green when the follow-up pushed it up, red when down, stronger when larger."""
    strength = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    level = int(60 + 160 * strength)
    return f"black on rgb({40},{level},{40})" if value > 0 else f"black on rgb({level},{40},{40})" if value < 0 else ""
