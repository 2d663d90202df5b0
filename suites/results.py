"""What `hindsight eval` writes: per entry, each metric's value, standard error and (where known) per-item scores."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.records import SCHEMA_VERSION


class MetricResult(BaseModel):
    """One number with its standard error; ``scores`` (per item, keyed by ``items``) lets `regress` pair two checkpoints."""

    model_config = ConfigDict(extra="forbid")
    value: float
    stderr: float | None = Field(description="standard error of value (None when the benchmark gives none)")
    n: int | None = Field(None, description="items behind the value")
    higher_is_better: bool = True
    items: list[str] | None = Field(None, description="item ids, aligned with scores")
    scores: list[float] | None = Field(None, description="per-item scores whose mean is value")


class EntryResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str = Field(description="the entry type (suites/suite.py ENTRY_TYPES: lm_eval, alpaca_eval, usereval, personalization, or a registered one)")
    metrics: dict[str, MetricResult]
    seconds: float = Field(description="time the entry took when it was computed (a cache hit keeps the original)")
    cache_key: str
    details: dict[str, Any] = Field(default_factory=dict, description="what else the benchmark reports (versions, judge usage, samples)")


class EvalResult(BaseModel):
    """A checkpoint evaluated on a suite (eval.json)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    model: str = Field(description="the model spec as given")
    model_path: str = Field(description="the local folder it resolved to")
    suite: str
    suite_file: str
    created: str
    limit: float | None = None
    backend: str = Field(description="lm-eval backend: hf or vllm")
    cache_hits: int = Field(0, description="entries served from the cache on this run")
    entries: list[EntryResult]

    def metric(self, entry: str, name: str) -> MetricResult | None:
        found = next((e for e in self.entries if e.name == entry), None)
        return found.metrics.get(name) if found else None
