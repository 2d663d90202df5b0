"""The run log: typed, versioned records and the files that hold them.

``results/<run-id>/``
    ``config.yaml``         the fully resolved RunConfig
    ``run.json``            RunInfo: status, versions, timings
    ``interactions.jsonl``  one InteractionRecord per interaction (prompt, answer, follow-up, advantage summary)
    ``metrics.jsonl``       TrainRecord per update and EvalRecord per evaluation point
    ``samples.jsonl``       SampleRecord per held-out answer at each evaluation point
    ``signals.jsonl``       SignalRecord per trained interaction: the update's per-token signal (kept apart: it is the bulk)
    ``curve.png``, ``summary.md``, ``checkpoints/<arm>-s<seed>/``
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.errors import UserInputError, read_text

if TYPE_CHECKING:
    from core.llm_client import LLMUsage

SCHEMA_VERSION = 1
Row = TypeVar("Row", bound=BaseModel)
Arm = Literal["treated", "guarded", "control", "initial", "oracle"]  # guarded: hindsight redteam's arm with the update guard on


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION


class GuardDecision(BaseModel):
    """What the update guard made of one follow-up (trainers/guard.py)."""

    model_config = ConfigDict(extra="forbid")
    flagged: bool = Field(description="the safety flagger judged the follow-up to push toward harm")
    reasons: list[str] = Field(default_factory=list, description="the flagger's reasons: rule categories, or the judge's verdict")
    skipped: bool = Field(False, description="left out of the update because it was flagged (guard skip_flagged or both)")
    flagger: str = Field(description="which flagger decided")
    raw: str | None = Field(None, description="the judge's text, for an LLM or local flagger")


class InteractionRecord(_Record):
    arm: Arm
    seed: int
    index: int = Field(description="0-based interaction number within the arm")
    step: int = Field(description="the update this interaction fed (0-based)")
    prompt: str
    response: str
    response_tokens: int
    finished: bool = Field(description="the answer ended on end-of-turn (not cut at max_new_tokens)")
    followup: str
    followup_raw: str
    satisfied: bool | None
    profile: str | None = Field(None, description="the user's profile at this interaction, when it changes during the run (flip, continual)")
    advantage: dict = Field(default_factory=dict, description="per-token advantage summary (mean/min/max, extreme tokens)")
    failed: str | None = Field(None, description="why the simulator gave no follow-up (its LLM still failing after retries); left out of the update")
    guard: GuardDecision | None = Field(None, description="the update guard's decision on the follow-up (None: no flagger ran)")
    method: str = Field("sdpo", description="the method that trained on this interaction")
    label: str | None = Field(None, description="RLHI methods: the follow-up's type (core/followups.py: new_request, reattempt_with_feedback, reattempt_without_feedback, positive_feedback; runs before the vocabulary was unified wrote new, retry_feedback, retry_no_feedback, positive)")
    update: dict = Field(default_factory=dict, description="RLHI methods: what the update did with this interaction (label and who decided it, persona, "
                         "rewrite or candidates, rewards, kept or why not, chosen and rejected)")


class SignalRecord(_Record):
    """What one update made of one interaction, token by token (SDPO), or of its preference pair (RLHI methods).
    Values are rounded to 4 decimals; a method that has nothing per token leaves the lists empty."""

    arm: Arm
    seed: int
    index: int = Field(description="the interaction (InteractionRecord.index)")
    step: int = Field(description="the update (InteractionRecord.step)")
    tokens: list[str] = Field(default_factory=list, description="the answer's tokens, each decoded alone")
    ids: list[int] = Field(default_factory=list, description="the answer's token ids")
    advantage: list[float] = Field(default_factory=list, description="SDPO: A_t of each token (before centring and ignore_first_k)")
    reference: str | None = Field(None, description="SDPO: the advantage reference, 'neutral' or 'plain'")
    pair: dict | None = Field(None, description="RLHI methods: label, kept, rewards, and chosen / rejected as tokens with the DPO weight "
                              "each token's log-probability got (+ chosen, − rejected)")


class TrainRecord(_Record):
    kind: Literal["train"] = "train"
    arm: Arm
    seed: int
    step: int
    interactions: int = Field(description="interactions seen after this update")
    metrics: dict[str, float]
    timings: dict[str, float] = Field(description="seconds per part (generate, simulate, train) and the whole step (step)")
    skipped: str | None = None
    failed: int = Field(0, description="interactions of this batch left out of the update: the simulator failed after its retries")
    peak_memory_gb: float | None = Field(None, description="peak resident memory so far of the process running this arm (shared file pages included)")


class OfflineStepRecord(_Record):
    """One optimizer step of `hindsight train` (offline SDPO or SFT on logged tuples), in the run's steps.jsonl."""

    kind: Literal["offline"] = "offline"
    method: Literal["sdpo", "sft"]
    step: int = Field(description="optimizer steps done after this one (1-based)")
    epoch: float = Field(description="passes over the tuples so far")
    tuples: int = Field(description="tuples seen so far")
    processes: int = Field(description="processes sharing each step (accelerate)")
    metrics: dict[str, float] = Field(description="loss, grad_norm, lr, answer_tokens, cut_answers, advantage_mean (sdpo), over the global batch")
    seconds: float
    skipped: str | None = Field(None, description="why the update was not applied (non-finite loss or gradient)")


class EvalRecord(_Record):
    kind: Literal["eval"] = "eval"
    arm: Arm
    seed: int
    interactions: int
    n: int = Field(description="held-out prompts scored")
    compliance: float
    clean: float = Field(description="compliant, not degenerate and relevant: the headline number")
    degenerate: float
    relevant: float
    mean_words: float
    apology: float
    meta: float
    looping: float
    empty: float
    truncated: float
    repetition: float = Field(description="mean repeated-4-gram fraction")
    distinct2: float
    prompt_similarity: float
    reference_similarity: float
    kl: float | None = Field(description="mean per-token KL(π_θ ‖ π_0) on these answers")
    seconds: float
    profile: str | None = Field(None, description="the preference scored (flip and continual runs score each one; None: the run's only profile)")
    judge: str | None = Field(None, description="the judge of the win-rate fields (None: not judged)")
    win_rate: float | None = Field(None, description="win rate against the untrained model's answers, ties as half, invalid verdicts left out")
    win_low: float | None = Field(None, description="bootstrap 95% interval of win_rate over prompts")
    win_high: float | None = None
    decisive: float | None = Field(None, description="wins / (wins + losses)")
    ties: float | None = Field(None, description="share of prompts judged a tie")
    invalid_rate: float | None = Field(None, description="share of prompts with an unparseable verdict")
    swap_agreement: float | None = Field(None, description="share of pairs judged validly in both orders whose orders agree")
    stopped: str | None = Field(None, description="why the arm stopped after this evaluation (its KL above max_kl); None: it went on")


class SampleRecord(_Record):
    arm: Arm
    seed: int
    interactions: int
    prompt: str
    answer: str
    words: int
    compliant: bool
    failed_checks: list[str]
    degeneration: list[str]
    prompt_similarity: float
    reference_similarity: float
    novel_words: int
    relevant: bool
    clean: bool
    profile: str | None = Field(None, description="the preference scored (see EvalRecord.profile)")
    verdict: Literal["A", "B", "tie", "invalid"] | None = Field(None, description="the judge's verdict, this answer (A) against the untrained model's (B)")
    verdict_raw: list[str] | None = Field(None, description="the judge's text for each order it was asked in")


class UsageRecord(BaseModel):
    """LLM calls made for one role (judge or simulator) over a run, summed over its processes; cost None when unknown."""

    model_config = ConfigDict(extra="forbid")
    calls: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    retries: int = Field(0, description="attempts after a fault (429, 5xx, timeout, unusable body)")
    failures: int = Field(0, description="calls that still failed after every retry")

    def describe(self) -> str:
        cost = "unknown cost" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        return f"{self.calls} calls ({self.cache_hits} cache hits), {self.prompt_tokens} + {self.completion_tokens} tokens, {cost}"


def usage_records(usage: Mapping[str, LLMUsage | None]) -> dict[str, UsageRecord] | None:
    """Per role, what an LLM spent, leaving out roles no LLM played or that made no call (None when none is left)."""
    from core.llm_client import LLMUsage

    return {role: UsageRecord(**dataclasses.asdict(u)) for role, u in usage.items() if u and u != LLMUsage()} or None


class WinRate(BaseModel):
    """A's record against B over a set of pairwise verdicts (one per prompt); written as is into the run's records.

    ``win_rate`` counts ties as half a win and ``decisive`` drops them (wins / (wins + losses)); both leave invalid
    verdicts out and are None when nothing is left. ``win_low``/``win_high`` are a seeded bootstrap 95% interval of
    ``win_rate`` over prompts. ``swap_agreement`` is the share of pairs judged validly in both orders whose orders agree.
    """

    model_config = ConfigDict(extra="forbid")
    n: int
    wins: int
    losses: int
    ties: int
    invalid: int
    win_rate: float | None = Field(description="ties as half, invalid verdicts left out")
    win_low: float | None = Field(description="bootstrap 95% interval over rows")
    win_high: float | None
    decisive: float | None = Field(description="wins / (wins + losses)")
    swap_agreement: float | None = Field(description="share of pairs judged validly in both orders whose orders agree (None: an order-free judge)")
    invalid_rate: float

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.win_low is None or self.win_high is None else (self.win_low, self.win_high)


MetricRecord = Annotated[TrainRecord | EvalRecord, Field(discriminator="kind")]
METRIC = TypeAdapter(MetricRecord)


class RunInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: str
    status: Literal["running", "finished", "failed"] = "running"
    created: str = Field(default_factory=lambda: now())
    finished: str | None = None
    seconds: float | None = None
    error: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    device: str = ""
    command: str = ""
    llm_usage: dict[str, UsageRecord] | None = Field(None, description="per role ('judge', 'simulator'), when an LLM played it")
    resumed: list[str] = Field(default_factory=list, description="when the run was resumed (--resume), each time; seconds and llm_usage cover the last session")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_jsonl(path: Path, record: BaseModel) -> None:
    """Append one record as one line with a single O_APPEND write (safe with several writer processes)."""
    line = (record.model_dump_json() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jsonl(path: Path, model: type[BaseModel] | TypeAdapter) -> Iterator:
    if not path.is_file():
        return
    validate = model.validate_python if isinstance(model, TypeAdapter) else model.model_validate
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            if not line.endswith("\n"):  # every record ends with a newline: this one was cut by a crash (--resume repairs it)
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return
                yield validate(record)
                return
            yield validate(json.loads(line))


def read_rows(path: Path, model: type[Row], expected: str) -> list[tuple[int, Row]]:
    """A user's JSONL file as (line number, row) pairs, blank lines skipped; a missing file, a line that is not JSON or
    not a valid row, or no rows at all is a one-line UserInputError naming file:line (``expected`` lists the fields)."""
    rows = []
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):  # not splitlines(): it also splits on \x1c, \u2028, …
        if not line.strip():
            continue
        try:
            rows.append((line_no, model.model_validate(json.loads(line))))
        except json.JSONDecodeError as exc:
            raise UserInputError(f"not JSON: {exc.msg}", path=path, line=line_no) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UserInputError(first["msg"], path=path, line=line_no, field=".".join(map(str, first["loc"])) or None) from None
    if not rows:
        raise UserInputError(f"no rows (one JSON object a line: {expected})", path=path)
    return rows


def write_json(path: Path, record: BaseModel) -> None:
    """Write atomically: temp file, fsync, rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(record.model_dump_json(indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
