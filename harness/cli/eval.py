"""Checkpoints on benchmark suites: eval (one checkpoint) and regress (a candidate against a reference, a CI gate)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from core.errors import UserInputError
from harness.cli.base import RESULTS, app, console, warn
from harness.cli.judge import judge_settings, slug
from harness.cli.options import Backend, Device, ModelJudge, plain, with_options

CHECKPOINT_HELP = ("'smollm2-135m' (embedded), a Hugging Face model folder, a run's checkpoint (RUN/checkpoints/treated-s0), "
                   "a run (its treated checkpoint) or a LoRA adapter folder.")


def _evaluate(spec: str, suite_spec: str, options, threads: int) -> Any:
    from core.runtime import quiet_libraries, set_threads
    from suites.runner import evaluate_checkpoint
    from suites.suite import load_suite

    suite = load_suite(suite_spec)
    quiet_libraries()
    set_threads(threads)
    return evaluate_checkpoint(spec, suite, options, say=lambda text: console.print(f"[dim]{spec} · {escape(text)}[/dim]", highlight=False))


def _load_or_evaluate(spec: str, suite: Optional[str], options, threads: int):
    """An eval.json written by `hindsight eval`, or a checkpoint evaluated on ``suite`` (cached)."""
    from suites.results import EvalResult

    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        from core.errors import read_text

        try:
            result = EvalResult.model_validate_json(read_text(path))
        except ValidationError as exc:
            raise UserInputError(f"not an eval result of `hindsight eval` ({exc.errors()[0]['msg']})", path=path) from None
        if suite and Path(suite).stem != result.suite:
            raise UserInputError(f"evaluated on suite '{result.suite}', not '{suite}'", path=path)
        return result
    if not suite:
        raise UserInputError(f"{spec}: give --suite to evaluate a checkpoint (or pass an eval.json written by `hindsight eval`)")
    return _evaluate(spec, suite, options, threads)


def _eval_table(result) -> Table:
    table = Table(title=f"{result.model} on suite {result.suite}" + (f" (limit {result.limit:g})" if result.limit else "")
                  + f" · {result.cache_hits}/{len(result.entries)} entries from the cache")
    for column, justify in (("entry", "left"), ("metric", "left"), ("value", "right"), ("± se", "right"), ("n", "right"), ("seconds", "right")):
        table.add_column(column, justify=justify, no_wrap=column in ("entry", "metric"))  # type: ignore[arg-type]
    for entry in result.entries:
        for name, m in entry.metrics.items():
            table.add_row(entry.name, name + ("" if m.higher_is_better else " ↓"), f"{m.value:.3f}", "–" if m.stderr is None else f"{m.stderr:.3f}",
                          "–" if m.n is None else str(m.n), f"{entry.seconds:.0f}")
    return table


EVAL_PANEL = "Checkpoints"


@dataclass
class SuiteOptions:
    """How eval and regress evaluate a checkpoint on a suite (their shared options)."""

    backend: Annotated[Backend, typer.Option(help=(  # type: ignore[valid-type]
        "lm-eval backend: hf (transformers, CPU or GPU), vllm (CUDA with vLLM installed) or auto (vllm when usable, else hf)."))] = Backend("auto")
    batch_size: Annotated[int, typer.Option(help="Batch size for lm-eval and for answer generation.", min=1)] = 8
    limit: Annotated[Optional[float], typer.Option(help=(
        "Items per entry: a count, or a fraction below 1 (lm-eval's --limit). (default: every item)"), min=0)] = None
    device: Annotated[Device, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = Device("auto")  # type: ignore[valid-type]
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every entry instead of reading cached results.")] = False
    judge: Annotated[Optional[ModelJudge], typer.Option(help=(  # type: ignore[valid-type]
        "Replace the judge of alpaca_eval and usereval entries: llm or local. (default: the suite's)"))] = None
    judge_model: Annotated[Optional[str], typer.Option(help=(
        "With --judge llm: a litellm model ('openai/NAME' with --judge-api-base); local: a model spec."))] = None
    judge_api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --judge llm, e.g. http://127.0.0.1:8000/v1.")] = None
    judge_api_key_env: Annotated[Optional[str], typer.Option(help="Name of the environment variable holding the judge's API key (never stored).")] = None
    threads: Annotated[int, typer.Option(help="torch threads.", min=1)] = 1

    def settings(self):
        """The suite runner's EvalOptions."""
        from suites.runner import EvalOptions

        override = self.judge or self.judge_model or self.judge_api_base or self.judge_api_key_env
        judge = judge_settings(self.judge, self.judge_model, self.judge_api_base, self.judge_api_key_env, kinds=("llm", "local")) if override else None
        return EvalOptions(backend=plain(self.backend), batch_size=self.batch_size, limit=self.limit, device=plain(self.device), cache=not self.no_cache,
                           judge=judge)


@app.command("eval", rich_help_panel=EVAL_PANEL)
@with_options(SuiteOptions)
def eval_checkpoint(
    checkpoint: Annotated[str, typer.Argument(metavar="CHECKPOINT", help=CHECKPOINT_HELP)],
    suite: Annotated[str, typer.Option("--suite", "-s", help="Suite name (suites/NAME.yaml: quick, default, paper) or path to a suite YAML.")] = "quick",
    out: Annotated[Optional[Path], typer.Option(help="Where to write the results JSON. (default: results/eval/CHECKPOINT-SUITE.json)")] = None,
    *,
    options: SuiteOptions,
) -> None:
    """Evaluate a checkpoint on a benchmark suite: each metric's value and standard error, as a table and a JSON file.

    A suite is one YAML file listing lm-eval tasks (by name, or local task folders), AlpacaEval sets (judged by any judge
    backend through alpaca-eval's own evaluate; win rate and length-controlled win rate), UserEval sets and the
    personalization win rate. Entries are cached: an unchanged rerun loads no model and returns at once.

    Examples:

      hindsight eval smollm2-135m --suite quick

      hindsight eval results/RUN/checkpoints/treated-s0 --suite default --judge-model openai/gpt-4o-mini --judge-api-key-env OPENAI_API_KEY

      hindsight eval ./my-adapter --suite paper --backend vllm
    """
    from core.records import write_json

    result = _evaluate(checkpoint, suite, options.settings(), options.threads)
    path = out or RESULTS / "eval" / f"{slug(_checkpoint_name(checkpoint))}-{result.suite}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    console.print(_eval_table(result))
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command(rich_help_panel=EVAL_PANEL)
@with_options(SuiteOptions)
def regress(
    candidate: Annotated[str, typer.Option(help="The checkpoint under test, or its eval JSON.")],
    reference: Annotated[Optional[str], typer.Option(help=(
        "What the candidate is compared to: a checkpoint (see `eval`) or an eval JSON written by `hindsight eval`."))] = None,
    baseline: Annotated[Optional[str], typer.Option(hidden=True, help="Deprecated: --reference.")] = None,
    suite: Annotated[Optional[str], typer.Option("--suite", "-s", help="Suite to evaluate checkpoints on (not needed when both are eval JSON files).")] = None,
    confidence: Annotated[float, typer.Option(help="Confidence for a change to count as significant (two-sided).", min=0.5, max=0.9999)] = 0.95,
    min_effect: Annotated[float, typer.Option(help="Smallest change that counts, in the metric's units (0.02 = two points of accuracy).", min=0)] = 0.0,
    report: Annotated[Optional[Path], typer.Option(help="Markdown report path. (default: results/regress/CANDIDATE-vs-REFERENCE-SUITE.md)")] = None,
    *,
    options: SuiteOptions,
) -> None:
    """Regression gate: per metric, candidate − reference with its standard error and a verdict; exit 1 if any regressed.

    A metric regressed when it got worse by at least --min-effect and the change is significant at --confidence. When both
    runs scored the same items the comparison is paired (standard error of the per-item differences), else the two
    standard errors are combined as independent. Exit code: 1 on a significant regression, 0 otherwise (use it in CI).

    Examples:

      hindsight regress --reference smollm2-135m --candidate results/RUN/checkpoints/treated-s0 --suite quick

      hindsight regress --reference base.json --candidate cand.json --min-effect 0.02 --confidence 0.9
    """
    from suites.regress import COLUMNS, cells, markdown
    from suites.regress import regress as compare

    if baseline is not None:
        warn("--baseline is deprecated; use --reference")
        if reference is not None and reference != baseline:
            raise UserInputError("give --reference only (--baseline is its old name)")
        reference = baseline
    if reference is None:
        raise UserInputError("--reference is required: the checkpoint or eval JSON the candidate is compared to")
    settings = options.settings()
    base = _load_or_evaluate(reference, suite, settings, options.threads)
    cand = _load_or_evaluate(candidate, suite, settings, options.threads)
    if base.suite != cand.suite:
        raise UserInputError(f"the reference was evaluated on suite '{base.suite}' and the candidate on '{cand.suite}'")
    result = compare(base, cand, confidence=confidence, min_effect=min_effect)
    if not result.comparisons:
        raise UserInputError("the two results share no metric")
    table = Table(title=f"{cand.model} against {base.model} · suite {base.suite} · {confidence:.0%} confidence, min effect {min_effect:g}")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("reference", "candidate", "delta ± se", "p") else "left")
    colour = {"regressed": "red", "improved": "green", "unchanged": "dim"}
    for c in result.comparisons:
        row = cells(c)
        table.add_row(*row[:-1], f"[{colour[c.verdict]}]{c.verdict}[/{colour[c.verdict]}]")
    console.print(table)
    path = report or RESULTS / "regress" / f"{slug(_checkpoint_name(candidate))}-vs-{slug(_checkpoint_name(reference))}-{base.suite}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(result, [shlex.join(["hindsight", *sys.argv[1:]])]), encoding="utf-8")
    worse = result.regressed
    if worse:
        console.print(f"[bold red]{len(worse)} regressed[/bold red]: " + ", ".join(f"{c.entry}/{c.metric}" for c in worse))
    else:
        console.print("[green]no significant regression[/green]")
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if worse else 0)


def _checkpoint_name(spec: str) -> str:
    """A readable file stem for a checkpoint spec: the alias, or the last parts of a path."""
    path = Path(spec)
    parts = [p for p in path.with_suffix("").parts if p not in ("results", "checkpoints", ".", "..", "/", "eval")]
    return "-".join(parts[-2:]) if parts else spec
