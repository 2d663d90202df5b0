"""Entries that judge the checkpoint's own answers: UserEval on a built set, and personalization win rate.

Answers are greedy, under the model's chat template (no system prompt: the template's default), ``max_new_tokens``
long at most. Per-item scores are 1 (the checkpoint's answer won), 0.5 (tie) and 0 (lost); invalid verdicts are left
out, so each win rate is the mean of its scores and its standard error is theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.engine import HFEngine, SamplingParams, cached_generate
from core.llm_client import LLMClient, LLMSettings
from core.policy import Message, Policy, PolicySettings
from core.records import read_rows
from core.stats import mean_se
from judges import BACKENDS, JudgeSettings
from judges.backends import build_backend
from judges.base import Verdict
from suites.results import MetricResult
from suites.suite import EntryRun, Limit, Suite, SuiteEntry, entry_type, item_count

SCORE = {"A": 1.0, "tie": 0.5, "B": 0.0}


@entry_type
class UserEvalEntry(SuiteEntry):
    """UserEval's three axes on a built set; the evaluated model writes each row's response."""

    kind: Literal["usereval"]
    data: str = Field(description="JSONL of {prompt, reference, history?, id?}, relative to the suite file")
    judge: JudgeSettings = Field(default_factory=lambda: JudgeSettings(kind="local", model="smollm2-135m"), description="kind llm or local")
    persona: str | None = Field(None, description="persona text for rows without a history")
    profile: str | None = Field(None, description="a profile whose description is the persona of rows without a history")
    persona_model: str | None = Field(None, description="litellm model summarizing histories into personas (default: the judge's, with kind llm)")
    max_new_tokens: int = Field(256, ge=1)
    limit: Limit | None = None

    judged: ClassVar[bool] = True

    def label(self) -> str:
        return self.name or "usereval"

    @model_validator(mode="after")
    def _checked(self) -> UserEvalEntry:
        if self.judge.kind not in BACKENDS:
            raise ValueError(f"the judge's kind must be a judge backend: {' or '.join(BACKENDS.names())}")
        if self.persona and self.profile:
            raise ValueError("give persona or profile, not both")
        return self

    def run(self, run: EntryRun) -> tuple[dict[str, Any], dict[str, Any]]:
        entry = self.model_copy(update={"judge": run.judge}) if run.judge is not None else self
        backend = build_backend(entry.judge, run.device)
        return run_usereval(entry, run.suite, run.model.policy, backend, limit=run.limit, batch_size=run.batch_size)


@entry_type
class PersonalizationEntry(SuiteEntry):
    """Win rate against a reference model's answers on held-out prompts, judged for a profile, and the profile's compliance."""

    kind: Literal["personalization"]
    profile: str = Field("concise", description="profile name or path (relative to the suite file)")
    prompts: str = Field("builtin", description="'builtin' or a JSONL of prompts (the held-out split is used)")
    n: int = Field(32, ge=1, description="held-out prompts")
    reference: str = Field("smollm2-135m", description="the model whose answers the checkpoint's are judged against (usually the untrained one)")
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="rules (the profile's checks, offline), llm or local")
    max_new_tokens: int = Field(128, ge=1)

    def label(self) -> str:
        return self.name or f"personalization-{Path(self.profile).stem}"

    def run(self, run: EntryRun) -> tuple[dict[str, Any], dict[str, Any]]:
        return run_personalization(self, run.suite, run.model.policy, limit=run.limit, batch_size=run.batch_size, device=run.device)


class UserEvalSetRow(BaseModel):
    """One row of a built UserEval set: the request, the reference response, and optionally the user's history."""

    model_config = ConfigDict(extra="forbid")
    id: str | int | None = None
    prompt: str | list[Message] = Field(min_length=1)
    reference: str
    history: list[str | list[Message]] | None = None


def answer(policy: Policy, prompts: Sequence[str | Sequence[Message]], max_new_tokens: int, batch_size: int) -> list[str]:
    """The policy's greedy answers."""
    contexts = [policy.encode_chat(policy.messages(p) if isinstance(p, str) else list(p)) for p in prompts]
    return [g.text for g in HFEngine(policy, batch_size=batch_size).generate(contexts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))]


def verdict_metric(verdicts: Sequence[Verdict], ids: Sequence[str]) -> MetricResult:
    """Win rate of A (ties half, invalid left out) with its standard error and per-item scores."""
    kept = [(i, SCORE[v.winner]) for i, v in zip(ids, verdicts) if v.winner in SCORE]
    if not kept:
        return MetricResult(value=float("nan"), stderr=None, n=0)
    value, se = mean_se([s for _, s in kept])
    return MetricResult(value=value, stderr=se, n=len(kept), items=[i for i, _ in kept], scores=[s for _, s in kept])


def run_usereval(entry: UserEvalEntry, suite: Suite, policy: Policy, backend, *, limit: float | None, batch_size: int) -> tuple[dict[str, MetricResult], dict[str, Any]]:
    from judges.usereval import UserEval, UserEvalRow
    from simulators.profile import load_profile

    rows = [row for _, row in read_rows(suite.resolve(entry.data), UserEvalSetRow, "prompt, reference, optional history, optional id")]
    rows = rows[: item_count(limit if limit is not None else entry.limit, len(rows))]
    responses = answer(policy, [r.prompt for r in rows], entry.max_new_tokens, batch_size)
    persona = entry.persona or (load_profile(_profile_spec(entry.profile, suite)).description if entry.profile else None)
    persona_client = None
    model = entry.persona_model or (entry.judge.llm.model if entry.judge.llm else None)
    if model and any(r.history for r in rows):
        llm = entry.judge.llm
        persona_client = LLMClient(LLMSettings(model=model, api_base=llm.api_base if llm else None, api_key_env=llm.api_key_env if llm else None, max_tokens=200))
    # without an LLM to summarize histories into personas, the entry's persona stands in for every row
    keep_history = persona_client is not None or persona is None
    judged = [UserEvalRow(id=r.id, prompt=r.prompt, response=text, reference=r.reference, history=r.history if keep_history else None)
              for r, text in zip(rows, responses)]
    result = UserEval(backend, persona_client).evaluate(judged, persona=persona)
    ids = [str(r.id if r.id is not None else k) for k, r in enumerate(rows)]
    metrics = {}
    for axis in result.axes:
        scores = [(i, SCORE[row.verdicts[axis]]) for i, row in zip(ids, result.rows) if row.verdicts[axis] in SCORE]
        value, se = mean_se([s for _, s in scores]) if scores else (float("nan"), None)
        metrics[axis] = MetricResult(value=value, stderr=se, n=len(scores), items=[i for i, _ in scores], scores=[s for _, s in scores])
    details = {"judge": result.judge, "axes": {a: r.model_dump() for a, r in result.axes.items()},
               "rows": [{"id": i, "response": text, **row.model_dump(exclude={"id"})} for i, text, row in zip(ids, responses, result.rows)]}
    return metrics, details


def run_personalization(entry: PersonalizationEntry, suite: Suite, policy: Policy, *, limit: float | None, batch_size: int, device: str) -> tuple[dict[str, MetricResult], dict[str, Any]]:
    from core.prompts import PromptSettings, load_prompts
    from judges import build_judge
    from judges.base import Pair
    from simulators.profile import load_profile

    profile = load_profile(_profile_spec(entry.profile, suite))
    source = entry.prompts if entry.prompts == "builtin" or entry.prompts.startswith("hf:") else str(suite.resolve(entry.prompts))
    prompts = list(load_prompts(PromptSettings(source=source, eval_prompts=entry.n)).heldout)
    prompts = prompts[: item_count(limit, len(prompts))]
    answers = answer(policy, prompts, entry.max_new_tokens, batch_size)
    reference = Policy.load(PolicySettings(model=entry.reference, device=device))  # type: ignore[arg-type]
    reference.model.eval().requires_grad_(False)
    contexts = [reference.encode_chat(reference.messages(p)) for p in prompts]
    against = [g.text for g in cached_generate(reference, HFEngine(reference, batch_size=batch_size), contexts,
                                               SamplingParams(max_new_tokens=entry.max_new_tokens, temperature=0.0))]
    del reference
    judge = build_judge(entry.judge, profile, device)
    assert judge is not None, "a personalization entry needs a judge"
    verdicts = judge.compare([Pair(p, a, b) for p, a, b in zip(prompts, answers, against)], persona=profile.description)
    ids = [str(k) for k in range(len(prompts))]
    compliant = [0.0 if profile.failures(a) else 1.0 for a in answers]
    value, se = mean_se(compliant)
    metrics = {"win_rate": verdict_metric(verdicts, ids),
               "compliance": MetricResult(value=value, stderr=se, n=len(compliant), items=ids, scores=compliant)}
    details = {"judge": judge.name, "reference": entry.reference, "profile": profile.name,
               "rows": [{"prompt": p, "answer": a, "reference_answer": b, "verdict": v.winner, "raw": list(v.raw)}
                        for p, a, b, v in zip(prompts, answers, against, verdicts)]}
    return metrics, details



def _profile_spec(spec: str, suite: Suite) -> str:
    """A profile name stays a name; a path is taken relative to the suite file."""
    return str(suite.resolve(spec)) if spec.endswith((".yaml", ".yml")) or "/" in spec else spec

