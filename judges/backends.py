"""What answers a rendered judge prompt: an LLM through the cached litellm client, or a local model's verdict-token probabilities.

``BACKENDS`` is the registry of backend kinds (``llm``, ``local``) and ``build_backend`` the one place that turns
settings naming a kind (a judge's, the update guard's flagger, the RLHI follow-up classifier, a suite's annotator) into
a backend. A new backend is one file with one ``@BACKENDS.register("name")`` factory taking
``(settings, device, labels, max_tokens)``; every judge, flagger and classifier kind then accepts its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from core.registry import Registry

if TYPE_CHECKING:
    from core.llm_client import LLMClient, LLMSettings
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
    """Any provider or OpenAI-compatible server, one cached call per prompt (sent concurrently, up to the client's
    ``concurrency``, answered in order); its text is parsed strictly by the judge."""

    concurrent = True  # callers may hand it many prompts at once (UserEval batches its rows)

    def __init__(self, client: LLMClient):
        self.client = client
        self.name = f"litellm:{client.settings.model}"

    def answer(self, prompts: Sequence[list[Message]]) -> list[BackendReply]:
        return [BackendReply(text) for text in self.client.complete_many([list(p) for p in prompts])]


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

    def answer(self, prompts: Sequence[list[Message]]) -> list[BackendReply]:
        import torch

        with torch.inference_mode():
            return self._answer(prompts)

    def _answer(self, prompts: Sequence[list[Message]]) -> list[BackendReply]:
        import torch

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


BACKENDS: Registry[JudgeBackend] = Registry("judge backend")


@dataclass(frozen=True)
class BackendSpec:
    """The fields ``build_backend`` reads, for callers whose settings spell them otherwise (RLHI's classifier)."""

    kind: str
    llm: LLMSettings | None = None
    model: str | None = None


def build_backend(settings: Any, device: str = "auto", *, labels: Sequence[str] | None = None, max_tokens: int | None = None) -> JudgeBackend:
    """The backend ``settings.kind`` names, built from ``settings.llm`` (kind llm) or ``settings.model`` (kind local).
    ``labels``: the verdict words a scoring backend chooses among (default A, B, TIE); ``max_tokens``: a cap on the
    LLM's reply."""
    return BACKENDS.create(settings.kind, settings=settings, device=device, labels=tuple(labels) if labels else None, max_tokens=max_tokens)


@BACKENDS.register("llm", help="any LLM through litellm, asked in both orders (needs llm settings)")
def _litellm(settings: Any, device: str, labels: tuple[str, ...] | None, max_tokens: int | None) -> JudgeBackend:
    from core.llm_client import LLMClient

    llm = settings.llm if max_tokens is None else settings.llm.model_copy(update={"max_tokens": max_tokens})
    return LiteLLMBackend(LLMClient(llm))


@BACKENDS.register("local", help="a local model's verdict-token probabilities, both orders (needs a model)")
def _local(settings: Any, device: str, labels: tuple[str, ...] | None, max_tokens: int | None) -> JudgeBackend:
    shared = local_backend(settings.model, device)
    return shared if labels is None else LocalBackend(shared.policy, labels=labels)


@cache
def local_backend(model: str, device: str) -> LocalBackend:
    """One loaded judge model per process, shared by every backend over it (whatever its labels)."""
    from core.policy import Policy, PolicySettings

    policy = Policy.load(PolicySettings(model=model, device=device))  # type: ignore[arg-type]
    policy.model.eval().requires_grad_(False)
    return LocalBackend(policy)
