"""Judges: what scores an answer — degeneration flags, embedding relevance, compliance, and pairwise persona verdicts."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.config import JudgeSettings
    from harness.llm_client import LLMUsage
    from judges.backends import LocalBackend
    from judges.base import Judge
    from simulators.profile import Profile


def build_judge(settings: JudgeSettings, profile: Profile | None, device: str = "auto") -> Judge | None:
    """The judge named by ``settings.kind`` for ``profile`` (None for ``none``). LLM and local judges read the persona
    passed to ``compare``; the rule judge reads ``profile``'s checks, so it needs one."""
    if settings.kind == "none":
        return None
    if settings.kind == "rules":
        from harness.errors import UserInputError
        from judges.rules import RuleJudge

        if profile is None or not profile.checks:
            which = f"profile '{profile.name}' has none" if profile else "give --profile"
            raise UserInputError(f"the rule judge decides by a profile's checks; {which} (or use --judge llm or local)")
        return RuleJudge(profile)
    from judges.pairwise import PairwiseJudge

    if settings.kind == "llm":
        from harness.llm_client import LLMClient
        from judges.backends import LiteLLMBackend

        return PairwiseJudge(LiteLLMBackend(LLMClient(settings.llm)))
    return PairwiseJudge(local_backend(settings.model, device))


@cache
def local_backend(model: str, device: str) -> LocalBackend:
    """One loaded judge model per process, shared by the preferences it judges."""
    from harness.policy import Policy, PolicySettings
    from judges.backends import LocalBackend

    policy = Policy.load(PolicySettings(model=model, device=device))  # type: ignore[arg-type]
    policy.model.eval().requires_grad_(False)
    return LocalBackend(policy)


def llm_usage(component: object) -> LLMUsage | None:
    """What the LLM client behind a simulator or judge has spent (None when no LLM plays it)."""
    from harness.llm_client import LLMClient

    client = getattr(component, "client", None) or getattr(getattr(component, "backend", None), "client", None)
    return client.usage() if isinstance(client, LLMClient) else None
