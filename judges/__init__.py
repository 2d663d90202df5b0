"""Judges: what scores an answer — degeneration flags, embedding relevance, compliance, and pairwise persona verdicts."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.llm_client import LLMSettings, check_backend

if TYPE_CHECKING:
    from core.llm_client import LLMUsage
    from judges.backends import LocalBackend
    from judges.base import Judge
    from simulators.profile import Profile


class JudgeSettings(BaseModel):
    """Who judges each held-out answer against the untrained model's answer to the same prompt, for the profile's persona.

    ``rules``: the profile's checks (offline; fewer failed checks wins). ``llm``: any LLM through litellm, asked in both
    orders. ``local``: a local model's verdict-token probabilities, both orders. ``none``: no win rates.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["rules", "llm", "local", "none"] = "rules"
    llm: LLMSettings | None = Field(None, description="for kind=llm")
    model: str | None = Field(None, description="for kind=local: a model spec (embedded alias, folder, .gguf, hub id)")

    @model_validator(mode="after")
    def _complete(self) -> JudgeSettings:
        return check_backend(self, "judge", model_flag="--judge-model", base_flag="--judge-api-base")


def build_judge(settings: JudgeSettings, profile: Profile | None, device: str = "auto") -> Judge | None:
    """The judge named by ``settings.kind`` for ``profile`` (None for ``none``). LLM and local judges read the persona
    passed to ``compare``; the rule judge reads ``profile``'s checks, so it needs one."""
    if settings.kind == "none":
        return None
    if settings.kind == "rules":
        from core.errors import UserInputError
        from judges.rules import RuleJudge

        if profile is None or not profile.checks:
            which = f"profile '{profile.name}' has none" if profile else "give --profile"
            raise UserInputError(f"the rule judge decides by a profile's checks; {which} (or use --judge llm or local)")
        return RuleJudge(profile)
    from judges.pairwise import PairwiseJudge

    if settings.kind == "llm":
        from core.llm_client import LLMClient
        from judges.backends import LiteLLMBackend

        return PairwiseJudge(LiteLLMBackend(LLMClient(settings.llm)))
    return PairwiseJudge(local_backend(settings.model, device))


@cache
def local_backend(model: str, device: str) -> LocalBackend:
    """One loaded judge model per process, shared by the preferences it judges."""
    from core.policy import Policy, PolicySettings
    from judges.backends import LocalBackend

    policy = Policy.load(PolicySettings(model=model, device=device))  # type: ignore[arg-type]
    policy.model.eval().requires_grad_(False)
    return LocalBackend(policy)


def llm_usage(component: object) -> LLMUsage | None:
    """What the LLM client behind a simulator or judge has spent (None when no LLM plays it)."""
    from core.llm_client import LLMClient

    client = getattr(component, "client", None) or getattr(getattr(component, "backend", None), "client", None)
    return client.usage() if isinstance(client, LLMClient) else None
