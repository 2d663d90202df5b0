"""Logged conversations: `data stats` (what a file turns into) and `data usereval` (build a WildChat-UserEval suite)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.base import app, console
from harness.cli.options import (
    FILE_HELP,
    ContextMessages,
    Device,
    DeviceOption,
    Filters,
    Languages,
    Limit,
    MaxConversationChars,
    MaxTurnChars,
    MinMessages,
    plain,
)

data_app = typer.Typer(help="Logged conversations (WildChat style): import statistics and the WildChat-UserEval set.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("stats")
def data_stats(
    file: Annotated[str, typer.Argument(metavar="FILE", help=FILE_HELP)],
    max_turn_chars: MaxTurnChars = None,
    max_conversation_chars: MaxConversationChars = None,
    min_messages: MinMessages = None,
    language: Languages = None,
    context_messages: ContextMessages = None,
    limit: Limit = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON (every skipped record included).")] = False,
) -> None:
    """What a conversation file turns into: records kept, skipped (each with its line and why), tuples, users, follow-up types.

    Every record that cannot be used is reported and skipped; nothing in the file stops the import.

    Example:

      hindsight data stats tests/data/wildchat_sample.jsonl --language English
    """
    from core.conversations import ImportSettings, describe_stats, import_stats, load_tuples
    from judges.followup import build_classifier

    filters = Filters(max_turn_chars, max_conversation_chars, min_messages, language, context_messages, limit)
    classifier = build_classifier()
    stats = import_stats(load_tuples(file, ImportSettings(**filters.given()), classifier), classifier.name)
    if as_json:
        typer.echo(stats.model_dump_json(indent=2))
        return
    for line in describe_stats(stats):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@data_app.command("usereval")
def data_usereval(
    file: Annotated[str, typer.Argument(metavar="FILE", help=FILE_HELP + " Needs user ids and timestamps.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The suite file to write (UserEval rows, JSONL).")],
    model: Annotated[str, typer.Option(help=(
        "The evaluated model, which answers every held-out turn: 'smollm2-135m', a model or checkpoint folder, a hub id."))] = "smollm2-135m",
    min_conversations: Annotated[int, typer.Option(help="Users need at least this many conversations (the RLHI paper: 10).", min=2)] = 10,
    holdout: Annotated[int, typer.Option(help="The last N conversations of each user are held out and answered.", min=1)] = 5,
    min_feedback: Annotated[int, typer.Option(help="Users need at least this many follow-ups with feedback in their reference history.", min=0)] = 1,
    max_users: Annotated[Optional[int], typer.Option(help=(
        "At most N users, those with most conversations first (the paper: 100). (default: all)"), min=1)] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.", min=1)] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy; the paper: 0.6).", min=0)] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (the paper: 0.9).", min=0.01, max=1)] = 0.9,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    device: DeviceOption = Device("auto"),  # type: ignore[valid-type]
    threads: Annotated[Optional[int], typer.Option(help="torch threads. (default: 1)", min=1)] = 1,
    max_turn_chars: MaxTurnChars = None,
    max_conversation_chars: MaxConversationChars = None,
    min_messages: MinMessages = None,
    language: Languages = None,
    limit: Limit = None,
) -> None:
    """Build a WildChat-UserEval suite: per user, the reference history and every answer turn of the last --holdout conversations.

    Users with enough history are kept; each one's conversations are ordered by timestamp; all but the last --holdout
    form the history the UserEval judge infers the persona from; each assistant turn of the held-out ones becomes a row
    {id, prompt (the conversation so far), response (--model's answer), reference (the logged answer), history}, which
    `hindsight usereval` judges on its three axes. Build one suite per model to compare (the rows are the same).

    Example:

      hindsight data usereval conversations.jsonl -o results/usereval-base.jsonl
      hindsight usereval results/usereval-base.jsonl --judge-model openai/gpt-4o-mini --judge-api-key-env OPENAI_API_KEY
    """
    from core.conversations import ImportSettings
    from harness.datasets import answer_usereval, split_usereval
    from suites.wildchat_usereval import UserEvalSettings

    filters = ImportSettings(**Filters(max_turn_chars, max_conversation_chars, min_messages, language, None, limit).given())
    settings = UserEvalSettings(min_conversations=min_conversations, holdout=holdout, min_feedback=min_feedback, max_users=max_users,
                                context_messages=filters.context_messages, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    split = split_usereval(file, filters, settings)
    data, report = split.data, split.report
    console.print(f"{file}: {data.records} records, {len(data.conversations)} kept ({len(data.skipped)} skipped: `hindsight data stats` lists them); "
                  f"{report.users_seen} users, {report.too_few_conversations} with fewer than {max(min_conversations, holdout + 1)} conversations, "
                  f"{report.too_little_feedback} with fewer than {min_feedback} feedback follow-ups → {len(report.users)} users, {report.rows} turns",
                  highlight=False, soft_wrap=True)
    with console.status(f"answering {report.rows} turns with {model}"):
        count = answer_usereval(split, settings, out, model=model, device=plain(device), threads=threads)
    for user in report.users:
        console.print(f"  {user.user}: {len(user.reference)} reference conversations ({user.feedback} follow-ups with feedback), "
                      f"{len(user.heldout)} held out", highlight=False, soft_wrap=True)
    console.print(f"wrote {count} rows to {out}; judge them with `hindsight usereval {out} --judge-model M`", highlight=False, soft_wrap=True)
