"""lm-eval through its Python API: one model object per evaluation, tasks by name or from local task folders.

Backends: ``hf`` (lm-eval's HFLM around the already-loaded transformers model: CPU or CUDA; LoRA adapters merged first)
and ``vllm`` (lm-eval's VLLM on the checkpoint folder; CUDA machines with vLLM installed). Chat templates are applied.
IFEval's sentence counts read NLTK's punkt_tab, written locally by ``suites.nltk_data`` (no download).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from core.errors import UserInputError
from core.stats import mean_se
from suites.nltk_data import ensure_punkt_tab
from suites.results import MetricResult
from suites.suite import EntryRun, Limit, Suite, SuiteEntry, entry_type

if TYPE_CHECKING:
    from core.policy import Policy



@entry_type
class LMEvalEntry(SuiteEntry):
    """An lm-eval task (or group) run through lm-eval's Python API."""

    kind: Literal["lm_eval"]
    task: str = Field(min_length=1, description="lm-eval task or group name, e.g. ifeval, mmlu_pro, hellaswag")
    path: str | None = Field(None, description="local task folder (relative to the suite file) holding the task's YAML")
    metrics: list[str] | None = Field(None, description="metrics to report, e.g. [prompt_level_loose_acc] (default: all)")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples (default: the task's own)")
    limit: Limit | None = None
    gen_kwargs: dict[str, Any] | None = Field(None, description="generation overrides, e.g. {max_gen_toks: 256}")
    data: list[str] = Field(default_factory=list, description="hub datasets the task needs (named when they are missing offline)")

    uses_lm_backend: ClassVar[bool] = True

    def label(self) -> str:
        return self.name or self.task

    def missing_inputs(self, suite: Suite, online: Callable[[], bool]) -> list[str]:
        """A task from lm-eval's registry reads hub data: offline, the declared datasets must be cached."""
        if self.path or online():
            return []
        if not self.data:
            return [f"{self.label()} (lm-eval hub task {self.task})"]
        return missing_hub_data(Suite.model_construct(name=suite.name, entries=[self]))

    def run(self, run: EntryRun) -> tuple[dict[str, Any], dict[str, Any]]:
        return run_task(self, run.suite, run.model.lm(), limit=run.limit)


HUB_HOST = "huggingface.co"
# lm-eval's per-request failures that mean "the data is not here", not a bug
OFFLINE_ERRORS = ("OfflineModeIsEnabled", "ConnectionError", "DatasetNotFoundError", "LocalEntryNotFoundError", "HfHubHTTPError", "FileNotFoundError")


def prepare_offline_env() -> bool:
    """Make lm-eval's imports safe offline; True when the hub is reachable. When it is not, datasets and the hub client
    are switched to offline mode so a missing dataset fails at once instead of after retries."""
    ensure_punkt_tab()
    online = hub_reachable()
    if not online:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    return online


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = (os.environ.get("HF_ENDPOINT") or f"https://{HUB_HOST}").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def missing_hub_data(suite: Suite) -> list[str]:
    """'entry (dataset)' for each hub dataset a suite's lm-eval entries declare that the local datasets cache lacks
    (only asked when the hub is unreachable)."""
    return [f"{e.label()} ({spec})" for e in suite.entries if isinstance(e, LMEvalEntry) and not e.path for spec in e.data
            if not hub_dataset_cached(*_repo_config(spec))]


def hub_dataset_cached(repo: str, config: str | None = None) -> bool:
    """Whether ``datasets`` can build ``repo`` (``config``) from its local cache alone."""
    import datasets

    try:
        datasets.load_dataset_builder(repo, config)
        return True
    except Exception:  # datasets raises assorted errors for "not cached and offline"
        return False


def _repo_config(spec: str) -> tuple[str, str | None]:
    repo, _, config = spec.partition(":")
    return repo, config or None


def make_lm(policy: Policy, folder: Path, backend: str, batch_size: int) -> Any:
    """lm-eval's model object: HFLM around ``policy``'s model, or VLLM on ``folder`` (a merged copy for adapters)."""
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(folder), batch_size=batch_size, dtype="auto", gpu_memory_utilization=0.8)
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=policy.model, tokenizer=policy.tokenizer, batch_size=batch_size, max_batch_size=batch_size)


def run_task(entry: LMEvalEntry, suite: Suite, lm: Any, *, limit: float | None) -> tuple[dict[str, MetricResult], dict[str, Any]]:
    """Evaluate one entry; its metrics (value, stderr, per-item scores) and details (version, config, responses)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    include = [str(suite.resolve(entry.path))] if entry.path else None
    manager = TaskManager(include_path=include)
    if entry.task not in manager.all_tasks:
        where = f"in {include[0]} or lm-eval's registry" if include else "in lm-eval's registry (`lm-eval ls tasks`)"
        raise UserInputError(f"entry '{entry.label()}': no lm-eval task or group named '{entry.task}' {where}", path=suite.file)
    fraction = limit if limit is not None else entry.limit
    try:
        out = lm_eval.simple_evaluate(
            model=lm, tasks=[entry.task], task_manager=manager, num_fewshot=entry.num_fewshot, limit=_limit(fraction),
            apply_chat_template=True, gen_kwargs=entry.gen_kwargs, log_samples=True, bootstrap_iters=1000,
        )
    except Exception as exc:
        if type(exc).__name__ in OFFLINE_ERRORS or "offline" in str(exc).lower():
            data = f" (needs {', '.join(entry.data)})" if entry.data else ""
            raise UserInputError(f"entry '{entry.label()}': lm-eval task '{entry.task}' could not load its data{data}: "
                                 f"{type(exc).__name__}; the hub is unreachable and the local datasets cache lacks it", path=suite.file) from None
        raise
    return _metrics(entry, out), {"lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else _version("lm-eval"),
                                  "configs": {k: v.get("task") for k, v in out.get("configs", {}).items()},
                                  "n_samples": out.get("n-samples", {}), "responses": _responses(out)}


def _limit(value: float | None) -> int | float | None:
    return None if value is None else int(value) if value >= 1 else value


def _metrics(entry: LMEvalEntry, out: dict) -> dict[str, MetricResult]:
    results = out["results"].get(entry.task) or out.get("groups", {}).get(entry.task)
    if results is None:
        raise UserInputError(f"entry '{entry.label()}': lm-eval returned no results for '{entry.task}'")
    better = out.get("higher_is_better", {}).get(entry.task, {})
    leaves = [t for t in out.get("samples", {})]
    metrics: dict[str, MetricResult] = {}
    for key, value in results.items():
        if "," not in key or "_stderr," in key or not isinstance(value, int | float):
            continue
        metric, _, filt = key.partition(",")
        name = metric if filt == "none" else f"{metric}/{filt}"
        if entry.metrics is not None and name not in entry.metrics and metric not in entry.metrics:
            continue
        items, scores = _per_item(out, leaves, metric, filt)
        stderr = results.get(f"{metric}_stderr,{filt}")
        stderr = float(stderr) if isinstance(stderr, int | float) and math.isfinite(stderr) else None
        if scores and not math.isclose(sum(scores) / len(scores), float(value), abs_tol=1e-9):
            items, scores = None, None  # not a plain mean over items (e.g. a weighted group): leave pairing out
        if stderr is None and scores:
            stderr = mean_se(scores)[1]
        metrics[name] = MetricResult(value=float(value), stderr=stderr, n=len(scores) if scores else _n(out, entry.task), higher_is_better=bool(better.get(metric, True)),
                                     items=items, scores=scores)
    if entry.metrics:
        absent = [m for m in entry.metrics if m not in metrics and not any(k.startswith(f"{m}/") for k in metrics)]
        if absent:
            raise UserInputError(f"entry '{entry.label()}': task '{entry.task}' reports no metric {', '.join(absent)} (it has {', '.join(metrics) or 'none'})")
    return metrics


def _per_item(out: dict, leaves: list[str], metric: str, filt: str) -> tuple[list[str] | None, list[float] | None]:
    """Per-doc scores of ``metric`` over the leaf tasks' samples; list-valued ones (IFEval's instruction level) flattened."""
    items, scores = [], []
    for task in leaves:
        for sample in out["samples"][task]:
            if sample.get("filter", "none") != filt or metric not in sample:
                continue
            value = sample[metric]
            prefix = f"{task}/{sample['doc_id']}" if len(leaves) > 1 else str(sample["doc_id"])
            if isinstance(value, list | tuple):
                items += [f"{prefix}.{k}" for k in range(len(value))]
                scores += [float(v) for v in value]
            elif isinstance(value, bool | int | float):
                items.append(prefix)
                scores.append(float(value))
            else:
                return None, None
    return (items, scores) if scores else (None, None)


def _n(out: dict, task: str) -> int | None:
    n = out.get("n-samples", {}).get(task, {})
    return n.get("effective") if isinstance(n, dict) else None


def _responses(out: dict) -> dict[str, list[dict]]:
    """Generated answers of generation tasks, per leaf task: {doc_id, response} (none for log-likelihood tasks)."""
    found = {}
    for task, samples in out.get("samples", {}).items():
        rows = [{"doc_id": s["doc_id"], "response": s["filtered_resps"][0]} for s in samples
                if s.get("filtered_resps") and isinstance(s["filtered_resps"][0], str)]
        if rows:
            found[task] = rows
    return found


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
