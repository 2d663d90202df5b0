"""AlpacaEval through alpaca-eval's own ``evaluate``, with one of our judge backends as its completion function.

alpaca-eval renders each pair with its annotator config (``suites/annotators/hindsight_pairwise``: our prompt,
alpaca-eval's random order of the two outputs and its regex parser) and calls ``fn_completions`` with ChatML prompts;
``BackendCompletions`` turns them into messages for the backend. The win rate and its standard error are alpaca-eval's.

The length-controlled win rate is alpaca-eval's ``get_length_controlled_winrate`` with its ``length_controlled_minimal``
GLM (length difference and the model's own term; the default GLM's per-instruction difficulty exists only for the
805 AlpacaEval prompts). That function still downloads ``df_gamed.csv`` from the hub to read the difficulties, which
the minimal GLM never uses: ``offline_lc_winrate`` hands it a local table of zero difficulties for the rows being
scored instead, so it runs offline.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal
from unittest import mock

from pydantic import Field, field_validator

from core.errors import UserInputError, read_text
from judges import BACKENDS, JudgeSettings
from judges.backends import JudgeBackend, build_backend
from suites.results import MetricResult
from suites.suite import EntryRun, Limit, Suite, SuiteEntry, entry_type, item_count

ANNOTATOR = Path(__file__).parent / "annotators" / "hindsight_pairwise" / "configs.yaml"



@entry_type
class AlpacaEvalEntry(SuiteEntry):
    """alpaca-eval's pairwise evaluation: win rate and length-controlled win rate of the checkpoint against references."""

    kind: Literal["alpaca_eval"]
    data: str = Field(description="JSON or JSONL of {instruction, output} (output = the reference answer), relative to the suite "
                                  "file; or hf:REPO[/CONFIG][:SPLIT] (needs the hub)")
    annotator: JudgeSettings = Field(default_factory=lambda: JudgeSettings(kind="local", model="smollm2-135m"),
                                     description="the judge backend: kind llm (any litellm model) or local (a local model's verdict-token probabilities)")
    max_new_tokens: int = Field(256, ge=1, description="longest answer of the evaluated model")
    limit: Limit | None = None

    judged: ClassVar[bool] = True

    def label(self) -> str:
        return self.name or "alpaca_eval"

    @field_validator("annotator")
    @classmethod
    def _backend(cls, judge: JudgeSettings) -> JudgeSettings:
        if judge.kind not in BACKENDS:
            raise ValueError(f"the annotator's kind must be a judge backend: {' or '.join(BACKENDS.names())}")
        return judge

    def missing_inputs(self, suite: Suite, online: Callable[[], bool]) -> list[str]:
        """The local data file; or, offline, hub data that is not cached."""
        from suites.lmeval import hub_dataset_cached

        if not self.data.startswith("hf:"):
            return super().missing_inputs(suite, online)
        return [] if online() or hub_dataset_cached(*hub_spec(self.data)[:2]) else [f"{self.label()} ({self.data})"]

    def run(self, run: EntryRun) -> tuple[dict[str, Any], dict[str, Any]]:
        from suites.generative import answer

        rows = load_rows(self.data if self.data.startswith("hf:") else run.suite.resolve(self.data))
        rows = rows[: item_count(run.limit if run.limit is not None else self.limit, len(rows))]
        answers = answer(run.model.policy, [r["instruction"] for r in rows], self.max_new_tokens, run.batch_size)
        return run_alpaca_eval(rows, answers, build_backend(run.judge or self.annotator, run.device), run.model_name)


def import_alpaca_eval() -> None:
    """Import alpaca-eval, which imports ``pkg_resources`` (gone from setuptools ≥ 81) for two helpers: where it is
    missing, a stand-in module with those two (``parse_version``, ``get_distribution(...).version``) is registered."""
    import sys

    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import types
        from importlib.metadata import version

        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse  # type: ignore[attr-defined]
        shim.get_distribution = lambda name: types.SimpleNamespace(version=version(name))  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    try:
        import alpaca_eval  # noqa: F401
    except ImportError as exc:
        raise UserInputError(f"alpaca_eval entries need alpaca-eval: `pip install -e '.[eval]'` ({exc})") from None


class BackendCompletions:
    """alpaca-eval's ``fn_completions`` protocol over a judge backend: ChatML prompts in, ``{"completions": [...]}`` out."""

    def __init__(self, backend: JudgeBackend):
        self.backend = backend
        self.raw: list[str] = []

    def __call__(self, prompts: Sequence[str], **_: Any) -> dict[str, list]:
        import_alpaca_eval()
        from alpaca_eval.utils import prompt_to_chatml

        messages = [[{"role": m["role"], "content": m["content"]} for m in prompt_to_chatml(p)] for p in prompts]
        texts = [reply.text for reply in self.backend.answer(messages)]
        self.raw += texts
        return {"completions": texts}


def load_rows(path: Path | str) -> list[dict[str, str]]:
    """Instructions with reference outputs: a JSON list or JSONL of {instruction, output, generator?} (alpaca-eval's
    format), or ``hf:REPO[/CONFIG][:SPLIT]`` (default config, split 'eval'; needs the hub or its cache)."""
    if isinstance(path, str) and path.startswith("hf:"):
        rows = _hub_rows(path[3:])
    else:
        path = Path(path)
        text = read_text(path)
        try:
            rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UserInputError(f"not JSON: {exc.msg}", path=path, line=exc.lineno) from None
    seen: set[str] = set()
    for k, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
            raise UserInputError(f"row {k}: needs instruction and output (the reference answer) as text", path=path)
        if row["instruction"] in seen:
            raise UserInputError(f"row {k}: repeats an instruction (alpaca-eval pairs outputs by instruction)", path=path)
        seen.add(row["instruction"])
    if not rows:
        raise UserInputError("no rows", path=path)
    return rows


def hub_spec(spec: str) -> tuple[str, str | None, str]:
    """``[hf:]REPO[/CONFIG][:SPLIT]`` → (repo, config, split); the split defaults to 'eval' (alpaca-eval's)."""
    repo, _, split = spec.removeprefix("hf:").partition(":")
    parts = repo.split("/")
    return "/".join(parts[:2]), parts[2] if len(parts) > 2 else None, split or "eval"


def _hub_rows(spec: str) -> list[dict[str, str]]:
    import datasets

    name, config, split = hub_spec(spec)
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises assorted errors when offline without a cache
        raise UserInputError(f"hf:{spec}: cannot load it ({type(exc).__name__}); it needs the Hugging Face hub or its local cache") from None
    return [{"instruction": r["instruction"], "output": r["output"], "generator": r.get("generator", "reference")} for r in data]


def run_alpaca_eval(rows: Sequence[dict[str, str]], answers: Sequence[str], backend: JudgeBackend, model_name: str) -> tuple[dict[str, MetricResult], dict[str, Any]]:
    """The model's answers against the rows' reference outputs: win rate and LC win rate (fractions) with standard errors."""
    import pandas as pd

    import_alpaca_eval()
    from alpaca_eval.main import evaluate

    model = pd.DataFrame([{"instruction": r["instruction"], "output": a, "generator": model_name} for r, a in zip(rows, answers)])
    reference = pd.DataFrame([{"instruction": r["instruction"], "output": r["output"], "generator": r.get("generator", "reference")} for r in rows])
    completions = BackendCompletions(backend)
    per_item: dict[str, list] = {}

    def metric(annotations) -> dict[str, float]:
        return offline_lc_winrate(annotations, per_item)

    leaderboard, annotations = evaluate(
        model_outputs=model, reference_outputs=reference, annotators_config=str(ANNOTATOR), fn_completions=completions, name=model_name,
        output_path=None, precomputed_leaderboard=None, caching_path=None, is_return_instead_of_print=True, fn_metric=metric,
        sort_by="length_controlled_winrate", is_cache_leaderboard=False,
    )
    row = leaderboard.loc[model_name]
    index = {r["instruction"]: str(k) for k, r in enumerate(rows)}
    items = [index[i] for i in per_item["instruction"]]
    win_scores = [float(p) - 1 for p in per_item["preference"]]
    valid = [k for k, p in enumerate(per_item["preference"]) if not math.isnan(p)]  # NaN: the judge's reply matched no label
    metrics = {
        "win_rate": MetricResult(value=float(row["win_rate"]) / 100, stderr=float(row["standard_error"]) / 100, n=len(valid),
                                 items=[items[k] for k in valid], scores=[win_scores[k] for k in valid]),
        # the GLM predicts every row's preference, judged or not: its mean over all rows is the LC win rate
        "lc_win_rate": MetricResult(value=float(row["length_controlled_winrate"]) / 100, stderr=float(row["lc_standard_error"]) / 100, n=len(items),
                                    items=items, scores=[float(p) for p in per_item["glm_preference"]]),
    }
    details = {"annotator": backend.name, "n_total": int(row["n_total"]), "n_wins": int(row["n_wins"]), "n_draws": int(row["n_draws"]),
               "avg_length": int(row["avg_length"]), "invalid": len(rows) - len(valid),
               "pairs": [{"instruction": r["instruction"], "output": a, "reference": r["output"]} for r, a in zip(rows, answers)],
               "annotations": [{k: _plain(v) for k, v in a.items() if k in ("instruction", "preference", "glm_preference") or k.endswith("raw_completion")}
                               for a in _records(annotations)]}
    return metrics, details


def offline_lc_winrate(annotations, keep: dict[str, list] | None = None) -> dict[str, float]:
    """alpaca-eval's length-controlled win rate (``length_controlled_minimal`` GLM) without its hub download.

    ``keep`` receives the per-row instruction, preference and GLM-predicted preference (whose mean is the LC rate).
    """
    import pandas as pd

    import_alpaca_eval()
    from alpaca_eval.metrics import glm_winrate

    frame = pd.DataFrame(_records(annotations)).reset_index(drop=True)
    if len(frame) < 2:
        raise UserInputError("the length-controlled win rate needs at least 2 instructions (raise --limit)")
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "df_gamed.csv"
        pd.DataFrame({"model": "none", "index": range(len(frame)), "instruction_difficulty": 0.0}).to_csv(table, index=False)
        with mock.patch.object(glm_winrate, "hf_hub_download", lambda **_: str(table)), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notices about alpaca-eval's LogisticRegressionCV arguments
            info = dict(glm_winrate.GLM_INFO["length_controlled_minimal"])
            info["kwargs"] = {"n_splits": min(5, len(frame))}  # its cross-validation folds: no more than the rows
            metrics = glm_winrate.get_length_controlled_winrate(frame, glm_name="length_controlled_minimal", save_weights_dir=None,
                                                                is_warn_extreme_changes=False, glm_info=info)
    if keep is not None:
        keep.update(instruction=list(frame["instruction"]), preference=list(frame["preference"].astype(float)),
                    glm_preference=list(frame["glm_preference"].astype(float)))
    return metrics


def _records(annotations) -> list[dict]:
    return annotations.to_dict("records") if hasattr(annotations, "to_dict") else list(annotations)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value
