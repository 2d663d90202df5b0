"""The instructions an LLM gets to play a user described by a profile (shared by the litellm and local simulators)."""

from __future__ import annotations

from core.policy import Message
from simulators.profile import Profile

SYSTEM = """You are playing a person who is chatting with an AI assistant. Stay in that role.

Who you are and what you want from answers:
{description}

How to reply:
- Write only the next message this person would send, in their own voice.
- Judge the assistant's last answer only against the preferences above.
- Never answer the request yourself and never write the answer you wanted.
- Be brief: one or two short sentences.
- If the answer already suits you, send a short positive reply and nothing else."""

USER = """My request was:
{prompt}

The assistant replied:
{answer}

Now write my next message to the assistant."""


def simulator_messages(profile: Profile, prompt: str, answer: str) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM.format(description=profile.description.strip())},
        {"role": "user", "content": USER.format(prompt=prompt, answer=answer)},
    ]


def clean_reply(raw: str) -> str:
    """Strip quotes and role labels a model may wrap its reply in; an empty reply stays empty (never faked)."""
    text = raw.strip()
    for label in ("User:", "user:", "Me:", "Reply:"):
        if text.startswith(label):
            text = text[len(label) :].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text
