"""What answers a rendered judge prompt: an LLM through the cached litellm client, or a local model's verdict-token probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from core.llm_client import LLMClient
    from core.policy import Message, Policy


@dataclass(frozen=True)
class BackendReply:
    """The judge's answer text; ``probs`` holds the verdict tokens' probabilities when the backend scored rather than wrote."""

    text: str
    probs: dict[str, float] | None = None

    def describe(self) -> str:
        if self.probs is None:
            return self.text
        return self.text + " (" + " ".join(f"{label}={p:.3f}" for label, p in self.probs.items()) + ")"


class JudgeBackend(Protocol):
    name: str

    def answer(self, prompts: Sequence[list[Message]]) -> list[BackendReply]: ...


class LiteLLMBackend:
    """Any provider or OpenAI-compatible server, one cached call per prompt; its text is parsed strictly by the judge."""

    def __init__(self, client: LLMClient):
        self.client = client
        self.name = f"litellm:{client.settings.model}"

    def answer(self, prompts: Sequence[list[Message]]) -> list[BackendReply]:
        return [BackendReply(self.client.complete(list(p))) for p in prompts]


class LocalBackend:
    """A local model's choice among the verdict labels: the most probable first token after the assistant header.

    No generation: one forward pass per prompt reads the next-token distribution at the start of the answer.
    The labels must begin with different tokens (for SmolLM2 "A", "B" and "TI" of "TIE").
    """

    def __init__(self, policy: Policy, labels: Sequence[str] = ("A", "B", "TIE"), batch_size: int = 8):
        self.policy = policy
        self.labels = tuple(labels)
        self.batch_size = batch_size
        self.token_ids = [policy.tokenizer.encode(label, add_special_tokens=False)[0] for label in self.labels]
        if len(set(self.token_ids)) != len(self.labels):
            raise ValueError(f"the verdict labels {self.labels} share a first token in this tokenizer")
        self.name = f"local:{policy.settings.model}"

    @torch.inference_mode()
    def answer(self, prompts: Sequence[list[Message]]) -> list[BackendReply]:
        model = self.policy.model
        was_training = model.training
        model.eval()
        replies = []
        for start in range(0, len(prompts), self.batch_size):
            contexts = [self.policy.encode_chat(p) for p in prompts[start : start + self.batch_size]]
            scored = self.policy.score(contexts, [[self.token_ids[0]]] * len(contexts), full_logits=True)
            probs = torch.softmax(scored.logits[:, 0, :], dim=-1)[:, self.token_ids].tolist()
            for row in probs:
                best = max(range(len(row)), key=row.__getitem__)
                replies.append(BackendReply(self.labels[best], dict(zip(self.labels, row))))
        model.train(was_training)
        return replies
