"""Judges: what scores an answer — degeneration flags, embedding relevance, compliance, and pairwise persona verdicts.

Judge kinds come from two registries: ``JUDGES`` (judges that are not a backend asked pairwise: ``rules``, ``none``) and
``judges.backends.BACKENDS`` (``llm``, ``local``: a ``PairwiseJudge`` over that backend). A new kind is one file with one
registration line in either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.llm_client import LLMSettings, check_backend
from core.registry import Registry
from judges.backends import BACKENDS, build_backend, local_backend

if TYPE_CHECKING:
    from core.llm_client import LLMUsage
    from judges.base import Judge
    from simulators.profile import Profile

__all__ = ["BACKENDS", "JUDGES", "JudgeKind", "JudgeSettings", "build_backend", "build_judge", "judge_kinds", "llm_usage", "local_backend"]

# the built-in kinds (for typing and the CLI's choices); validation reads the registries, so registered kinds are valid too
JudgeKind = Literal["rules", "llm", "local", "none"]

# judges built from (settings, profile, device) that are not a pairwise judge over a backend
JUDGES: Registry[Any] = Registry("judge")


def judge_kinds() -> list[str]:
    """Every judge kind: the registered judges, then the backends (each a pairwise judge)."""
    return [*JUDGES.names(), *(name for name in BACKENDS.names() if name not in JUDGES)]


class JudgeSettings(BaseModel):
    """Who judges each held-out answer against the untrained model's answer to the same prompt, for the profile's persona.

    ``rules``: the profile's checks (offline; fewer failed checks wins). ``llm``: any LLM through litellm, asked in both
    orders. ``local``: a local model's verdict-token probabilities, both orders. ``none``: no win rates.
    """

    model_config = ConfigDict(extra="forbid")
    kind: str = Field("rules", description="rules, llm, local or none (or a registered judge or backend kind)")
    llm: LLMSettings | None = Field(None, description="for kind=llm")
    model: str | None = Field(None, description="for kind=local: a model spec (embedded alias, folder, .gguf, hub id)")

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in judge_kinds():
            raise ValueError(f"unknown judge '{kind}' (known: {', '.join(judge_kinds())})")
        return kind

    @model_validator(mode="after")
    def _complete(self) -> JudgeSettings:
        return check_backend(self, "judge", model_flag="--judge-model", base_flag="--judge-api-base")


def build_judge(settings: JudgeSettings, profile: Profile | None, device: str = "auto") -> Judge | None:
    """The judge named by ``settings.kind`` for ``profile`` (None for ``none``). Pairwise judges read the persona
    passed to ``compare``; the rule judge reads ``profile``'s checks, so it needs one."""
    if settings.kind in JUDGES:
        return JUDGES.create(settings.kind, settings=settings, profile=profile, device=device)
    from judges.pairwise import PairwiseJudge

    return PairwiseJudge(build_backend(settings, device))


@JUDGES.register("rules", help="the profile's checks (offline; fewer failed checks wins)")
def _rules(settings: JudgeSettings, profile: Profile | None, device: str) -> Judge:
    from core.errors import UserInputError
    from judges.rules import RuleJudge

    if profile is None or not profile.checks:
        which = f"profile '{profile.name}' has none" if profile else "give --profile"
        raise UserInputError(f"the rule judge decides by a profile's checks; {which} (or use --judge llm or local)")
    return RuleJudge(profile)


@JUDGES.register("none", help="no win rates")
def _none(settings: JudgeSettings, profile: Profile | None, device: str) -> None:
    return None


def llm_usage(component: object) -> LLMUsage | None:
    """What the LLM client behind a simulator or judge has spent (None when no LLM plays it)."""
    from core.llm_client import LLMClient

    client = getattr(component, "client", None) or getattr(getattr(component, "backend", None), "client", None)
    return client.usage() if isinstance(client, LLMClient) else None
