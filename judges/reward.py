"""Persona-conditioned rewards: a score for one response to one request, for one user (or for no one in particular).

``RewardSettings.kind``:

- ``rules`` (offline, the default): w_c · share of the user's profile checks passed + w_r · MiniLM cosine(response,
  request) − w_d · [degenerate (apology or meta opening, loop, empty) or off-topic (cosine below ``min_relevance``, or
  fewer than two content words the request lacks: on the 135M model, "rewrites" that merely echo the feedback, such
  as "My message: Too long.", otherwise beat real answers on brevity)]. It reads the simulated user's profile checks,
  the same proxies a scripted user complains by: an **oracle of the user's preferences**, which no deployment has;
  the relevance and degeneration terms keep an empty or off-topic answer from winning on brevity. User-agnostic
  (no profile): relevance and degeneration only.
- ``llm``: any litellm model (or OpenAI-compatible server) rates the response 1–10 for the persona (or generically),
  parsed strictly; an unparseable rating is None and the pair it would decide is dropped (recorded).
- ``model``: a reward model loaded with transformers (``AutoModelForSequenceClassification``, safetensors only): the
  chat (persona as system message when given, the request, the response) rendered by its tokenizer's chat template
  (plain text when it has none); the reward is the first logit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from judges.degeneration import assess
from judges.relevance import novel_content_words

if TYPE_CHECKING:
    from core.llm_client import LLMClient
    from core.policy import Message
    from core.text import Embedder
    from simulators.profile import Profile


class RewardSettings(BaseModel):
    """Which reward scores responses for the RLHI methods (see judges/reward.py)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["rules", "llm", "model"] = Field("rules", description="rules (offline; reads the profile's checks: an oracle), llm (rates 1-10, "
                                                  "needs rlhi.llm), model (a sequence-classification reward model: set model)")
    model: str | None = Field(None, description="for kind=model: a folder or hub id of a transformers sequence-classification model")
    compliance_weight: float = Field(1.0, ge=0, description="rules: weight of the share of profile checks passed")
    relevance_weight: float = Field(0.5, ge=0, description="rules: weight of cosine(response, request) (MiniLM)")
    degenerate_penalty: float = Field(1.0, ge=0, description="rules: subtracted from the reward of a degenerate or off-topic response")
    min_relevance: float | None = Field(0.3, description="rules: a response whose cosine to the request is below this, or that adds fewer than two "
                                        "content words the request lacks, is off-topic (the evaluation's relevance test, request side); None: off")

    @model_validator(mode="after")
    def _complete(self) -> RewardSettings:
        if self.kind == "model" and not self.model:
            raise ValueError("reward kind 'model' needs a reward model: --set rlhi.reward.model=FOLDER_OR_HUB_ID")
        return self


@dataclass(frozen=True)
class Reward:
    """One response's reward (None: the judge gave no usable score) and what it was made of."""

    value: float | None
    parts: dict = field(default_factory=dict)


class RuleReward:
    """See the module docstring (``rules``)."""

    def __init__(self, settings: RewardSettings, embedder: Embedder):
        self.settings = settings
        self.embedder = embedder
        self.name = "rules"

    def score(self, prompts: Sequence[str], responses: Sequence[str], persona: str | None, profile: Profile | None) -> list[Reward]:
        s = self.settings
        similarity = self.embedder.similarity(list(responses), list(prompts)) if responses else []
        out = []
        for prompt, response, sim in zip(prompts, responses, similarity):
            degeneration = assess(response)
            off_topic = s.min_relevance is not None and (sim < s.min_relevance or novel_content_words(response, prompt) < 2)
            value = s.relevance_weight * sim - s.degenerate_penalty * (degeneration.degenerate or off_topic)
            parts: dict = {"relevance": round(sim, 4), "off_topic": off_topic, "degenerate": degeneration.reasons()}
            if profile is not None and profile.checks:
                failed = profile.failures(response)
                value += s.compliance_weight * (1 - len(failed) / len(profile.checks))
                parts["failed"] = [c.describe() for c in failed]
            out.append(Reward(round(value, 6), parts))
        return out


RATE_SYSTEM_PERSONA = """You rate one reply an AI assistant gave, on behalf of one particular user.

What is known about how this user wants to be answered:
{persona}

Rate how well the reply serves this user: it must do what the request asks, and do it the way this user wants. \
Use a scale from 1 (useless to this user) to 10 (exactly what this user wants). Answer with the number only."""

RATE_SYSTEM_GENERIC = """You rate one reply an AI assistant gave to a request.

Rate how well the reply does what the request asks: correct, useful, clear. Use a scale from 1 (useless) to 10 \
(excellent). Answer with the number only."""

RATE_USER = """The request:
<<<
{prompt}
>>>

The reply:
<<<
{response}
>>>

Your rating (1-10):"""

_RATING = re.compile(r"^\s*(?:rating\s*:\s*)?\**\s*(10|[1-9])\s*\**\s*(?:/\s*10)?\s*\.?\s*$", re.IGNORECASE)


def rating_messages(prompt: str, response: str, persona: str | None) -> list[Message]:
    system = RATE_SYSTEM_PERSONA.format(persona=persona.strip()) if persona else RATE_SYSTEM_GENERIC
    return [{"role": "system", "content": system}, {"role": "user", "content": RATE_USER.format(prompt=prompt.strip(), response=response.strip())}]


def parse_rating(text: str) -> int | None:
    """1–10 when the reply is just the number (optionally 'Rating:', '/10', bold or a full stop), else None."""
    match = _RATING.match(text)
    return int(match.group(1)) if match else None


class LLMReward:
    """See the module docstring (``llm``). Its requests are sent concurrently (``concurrent``: RLHI hands it a whole batch)."""

    concurrent = True

    def __init__(self, client: LLMClient):
        self.client = client
        self.name = f"llm:{client.settings.model}"

    def score(self, prompts: Sequence[str], responses: Sequence[str], persona: str | None, profile: Profile | None) -> list[Reward]:
        texts = self.client.complete_many([rating_messages(p, r, persona) for p, r in zip(prompts, responses)])
        return [Reward(None if (rating := parse_rating(text)) is None else float(rating), {"raw": text[:200]}) for text in texts]


class ModelReward:
    """See the module docstring (``model``)."""

    def __init__(self, source: str, device: str | torch.device = "cpu", trust_remote_code: bool = False):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from core.models import resolve_model

        where = resolve_model(source)  # a local folder without safetensors weights is a UserInputError naming the file
        self.tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(where, use_safetensors=True, trust_remote_code=trust_remote_code)
        self.model.to(device).eval().requires_grad_(False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = torch.device(device)
        self.name = f"model:{source}"

    def render(self, prompt: str, response: str, persona: str | None) -> str:
        messages = ([{"role": "system", "content": persona}] if persona else []) + [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], responses: Sequence[str], persona: str | None, profile: Profile | None) -> list[Reward]:
        texts = [self.render(p, r, persona) for p, r in zip(prompts, responses)]
        if not texts:
            return []
        self.tokenizer.padding_side = "right"
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=2048, return_tensors="pt").to(self.device)
        logits = self.model(**enc).logits.float()
        return [Reward(round(float(v), 6)) for v in logits[:, 0].tolist()]


def build_reward(settings: RewardSettings, *, client: LLMClient | None, embedder_device: str | torch.device = "cpu"):
    """The reward named by ``settings.kind`` (``client`` serves kind=llm)."""
    from core.errors import UserInputError

    if settings.kind == "rules":
        from core.text import Embedder

        return RuleReward(settings, Embedder(device=embedder_device))
    if settings.kind == "llm":
        if client is None:
            raise UserInputError("rlhi.reward.kind 'llm' needs an LLM: give --rlhi-model (and --rlhi-api-base for a local server)")
        return LLMReward(client)
    return ModelReward(settings.model, device=embedder_device)
