"""Judges as commands: usereval (three axes against reference responses) and judge (two output files for one persona)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from core.errors import UserInputError
from harness.cli.base import RESULTS, app, console
from harness.cli.options import JudgeApiBase, JudgeKeyEnv, JudgeModel, ModelJudge, PairJudge, plain

if TYPE_CHECKING:
    from core.records import WinRate
    from judges import JudgeSettings


def judge_settings(kind: str | None, model: str | None, api_base: str | None, api_key_env: str | None, kinds: tuple[str, ...],
                   concurrency: int = 8) -> JudgeSettings:
    """--judge and its --judge-model/--judge-api-base/--judge-api-key-env; no --judge means llm when a model or base URL is
    given, else the first of ``kinds``. ``concurrency``: the llm judge's requests in flight at once."""
    from core.llm_client import LLMSettings
    from judges import JudgeSettings

    kind = plain(kind) or ("llm" if model or api_base else kinds[0])
    if kind not in kinds:
        raise UserInputError(f"--judge {kind}: use " + ", ".join(kinds[:-1]) + f" or {kinds[-1]}")
    llm = LLMSettings(model=model or "openai/local", api_base=api_base, api_key_env=api_key_env, concurrency=concurrency) if kind == "llm" else None
    return JudgeSettings(kind=kind, llm=llm, model=(model or "smollm2-135m") if kind == "local" else None)  # type: ignore[arg-type]


def slug(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)


def win_rate_table(title: str, label: str, results: dict[str, WinRate]) -> Table:
    from judges.pairwise import COLUMNS, cells

    table = Table(title=title)
    for column in (label, *COLUMNS):
        table.add_column(column)
    for name, summary in results.items():
        table.add_row(name, *cells(summary))
    return table


@app.command(rich_help_panel="Judges")
def usereval(
    rows: Annotated[Path, typer.Argument(help=(
        "JSONL, one object a line: prompt (text or messages), response, reference, optional history (past conversations as message lists, "
        "or past messages and follow-ups as text), optional id."))],
    judge: Annotated[ModelJudge, typer.Option(help=(  # type: ignore[valid-type]
        "llm (any litellm model) or local (a local model's verdict-token probabilities)."))] = ModelJudge("llm"),
    judge_model: JudgeModel = None,
    judge_api_base: JudgeApiBase = None,
    judge_api_key_env: JudgeKeyEnv = None,
    persona_model: Annotated[Optional[str], typer.Option(help=(
        "litellm model that summarizes each user's history into a persona. (default: the judge model, with --judge llm)"))] = None,
    persona_api_base: Annotated[Optional[str], typer.Option(help="Base URL for --persona-model. (default: --judge-api-base)")] = None,
    persona: Annotated[Optional[str], typer.Option(help="Persona text for rows without a history.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Use this profile's description as the persona of rows without a history.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for usereval.json and summary.md. (default: results/usereval-STEM)")] = None,
    llm_concurrency: Annotated[int, typer.Option(min=1, help=(
        "LLM requests (judge and persona) in flight at once; the result does not depend on it."))] = 8,
) -> None:
    """UserEval: judge responses against reference responses on personalization, instruction-following and overall.

    Each axis is a pairwise judgement in both orders, parsed strictly (invalid verdicts are counted, never scored);
    personalization and overall judge for a persona summarized from the row's history by --persona-model. Writes
    usereval.json (per-axis win rates with bootstrap 95% intervals, every row's verdicts and persona, LLM usage) and
    summary.md.

    Example:

      hindsight usereval turns.jsonl --judge-model openai/gpt-4o-mini --judge-api-key-env OPENAI_API_KEY
    """
    from harness.judging import usereval_files

    settings = judge_settings(judge, judge_model, judge_api_base, judge_api_key_env, kinds=("llm", "local"), concurrency=llm_concurrency)
    done = usereval_files(rows, settings, out or RESULTS / f"usereval-{slug(rows.stem)}", persona_model=persona_model,
                          persona_api_base=persona_api_base or judge_api_base, persona_api_key_env=judge_api_key_env, persona=persona, profile=profile,
                          concurrency=llm_concurrency)
    result, folder = done.result, done.folder
    console.print(win_rate_table(f"UserEval of {rows} ({done.rows} rows, judge {result.judge})", "axis", result.axes))
    console.print(f"wrote {folder / 'usereval.json'} and {folder / 'summary.md'}", highlight=False, soft_wrap=True)


@app.command("judge", rich_help_panel="Judges")
def judge_files(
    a: Annotated[Path, typer.Argument(metavar="A.jsonl", help=(
        "Output file A (the candidate): JSONL, one object a line: prompt (text or messages), response, optional id; other fields are ignored."))],
    b: Annotated[Path, typer.Argument(metavar="B.jsonl", help="Output file B (the reference), the same format.")],
    profile: Annotated[Optional[str], typer.Option("--profile", "-p", help=(
        "Profile name or path: its description is the persona, and with --judge rules its checks decide."))] = None,
    persona: Annotated[Optional[str], typer.Option(help="Persona text for an llm or local judge, instead of the profile's description.")] = None,
    judge: Annotated[Optional[PairJudge], typer.Option(help=(  # type: ignore[valid-type]
        "rules (the profile's checks, offline, one verdict per pair), llm (any litellm model, both orders) or local (a local model's "
        "verdict-token probabilities, both orders). (default: rules, llm when --judge-model or --judge-api-base is given)"))] = None,
    judge_model: JudgeModel = None,
    judge_api_base: JudgeApiBase = None,
    judge_api_key_env: JudgeKeyEnv = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for judge.json and summary.md. (default: results/judge-A_STEM-vs-B_STEM)")] = None,
) -> None:
    """Judge two output files against each other for one persona: the win rate of A's responses over B's.

    Rows are paired by id when every row of both files has one, else by prompt text. The pairing must be exact: a row
    without a partner in the other file, or an id or prompt used twice in one file, stops the command with an error
    naming file:line (skipping rows silently would bias the comparison), as does an id whose two prompts differ.
    LLM and local judges see every pair in both orders and are parsed strictly (invalid verdicts are counted, never
    scored); their calls are cached, so a rerun makes no new ones. Writes judge.json (the summary, every pair's verdict
    and the judge's raw text, LLM usage) and summary.md.

    A run's held-out answers become such a file with jq, one arm (treated, control, oracle, initial = untrained), seed and
    evaluation point at a time (flip and continual runs: add .profile=="NAME"):

      jq -c 'select(.arm=="treated" and .seed==0 and .interactions==64) | {prompt, response: .answer}' RUN/samples.jsonl > a.jsonl

    Examples:

      hindsight judge treated.jsonl control.jsonl --profile concise

      hindsight judge a.jsonl b.jsonl --profile concise --judge-model openai/gpt-4o-mini --judge-api-key-env OPENAI_API_KEY
    """
    from harness.judging import judge_two_files

    settings = judge_settings(judge, judge_model, judge_api_base, judge_api_key_env, kinds=("rules", "llm", "local"))
    done = judge_two_files(a, b, settings, out or RESULTS / f"judge-{slug(a.stem)}-vs-{slug(b.stem)}", profile=profile, persona=persona)
    result, folder = done.result, done.folder
    console.print(f"A = {a}, B = {b}: {len(result.rows)} rows paired by {done.matched_by}, judge {result.judge}", highlight=False, soft_wrap=True)
    console.print(win_rate_table("A against B", "file", {"A": result.summary}))
    for role, u in (result.llm_usage or {}).items():
        console.print(f"LLM {role}: {u.describe()}", highlight=False)
    console.print(f"wrote {folder / 'judge.json'} and {folder / 'summary.md'}", highlight=False, soft_wrap=True)
