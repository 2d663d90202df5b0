"""A user's persona: up to five points on how they want to be answered, summarized from their messages.

Sources (``PersonaSettings.source``):

- ``inferred``: an LLM (any litellm model or OpenAI-compatible server) reads the user's recent messages;
- ``heuristic``: offline stand-in: the user's most frequent feedback messages, quoted as the points (labelled
  ``heuristic`` wherever it is recorded);
- ``profile``: the simulated user's own profile description. An **oracle**: no real deployment knows it; use it as
  an upper reference for what a perfect persona would give;
- ``none``: no persona (persona-free contexts everywhere).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from core.llm_client import LLMClient
    from core.policy import Message

PersonaSource = Literal["inferred", "heuristic", "profile", "none"]

SYSTEM = """You study how one user talks to an AI assistant and write down how this user wants to be answered."""

USER = """Here are messages one user sent to an AI assistant, oldest first: their requests, and what they said after \
reading the assistant's answers.

<<<
{messages}
>>>

From these messages only, write at most five short bullet points ("- ...") on how this user wants the assistant to \
answer: length, depth, tone, format, and anything they keep asking for or complaining about. Leave out anything the \
messages do not show. Write the bullet points and nothing else."""

# How a persona joins the system prompt, for training contexts and persona-guided inference (one wording for both).
PERSONA_SYSTEM = """You are a helpful assistant who adapts to each user. Answer the user's request first and foremost; \
where it fits, shape your answer to what is known about this user:
{persona}"""


class PersonaSettings(BaseModel):
    """Where the persona comes from, and how much of the user's history it reads."""

    model_config = ConfigDict(extra="forbid")
    source: PersonaSource = Field("heuristic", description="inferred (LLM, needs rlhi.llm), heuristic (offline: the user's most frequent feedback "
                                  "messages), profile (the simulated user's profile description: an oracle), none")
    history: int = Field(40, ge=1, description="the user's most recent messages (requests and follow-ups) the persona is inferred from")
    max_tokens: int = Field(200, ge=16, description="for source=inferred: the LLM's token budget for the points")


def persona_messages(history: Sequence[str]) -> list[Message]:
    """The persona-inference prompt for a user's messages (oldest first)."""
    lines = "\n".join(f"- {m.strip()}" for m in history)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER.format(messages=lines)}]


def heuristic_persona(feedback: Sequence[str], points: int = 5) -> str | None:
    """Offline persona: the user's ``points`` most frequent feedback messages (ties: most recent first), quoted; None when there is none."""
    if not feedback:
        return None
    last = {m: k for k, m in enumerate(feedback)}
    ranked = sorted(Counter(feedback).items(), key=lambda item: (-item[1], -last[item[0]]))[:points]
    return "\n".join(f'- The user has said: "{m.strip()}"' for m, _ in ranked)


def infer_persona(client: LLMClient, history: Sequence[str]) -> str | None:
    """The LLM's bullet points for this history (at most five kept); None for an empty history or reply."""
    if not history:
        return None
    text = client.complete(persona_messages(history)).strip()
    bullets = [line.strip() for line in text.splitlines() if line.strip()]
    return "\n".join(bullets[:5]) or None


def persona_system(persona: str | None, base: str | None) -> str | None:
    """The system prompt carrying ``persona`` (after ``base`` when there is one); ``base`` unchanged without a persona."""
    if not persona:
        return base
    text = PERSONA_SYSTEM.format(persona=persona.strip())
    return f"{base}\n\n{text}" if base else text
