"""Two output files judged against each other for one persona (`hindsight judge A.jsonl B.jsonl`).

Rows are paired by ``id`` when every row of both files has one, else by prompt. The pairing must be exact: a row
without a partner, or a key used twice in one file, is an error naming file:line, since silently dropping rows
would bias the win rate towards whichever rows both runs happened to finish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import UserInputError
from core.policy import Message
from core.records import SCHEMA_VERSION, UsageRecord, WinRate, read_rows
from judges.base import Judge, Pair, Winner
from judges.pairwise import markdown_table, summarize

EXPECTED = "prompt (text or messages), response, optional id"


class OutputRow(BaseModel):
    """One line of an output file; fields other than these are ignored (output files often carry metadata)."""

    model_config = ConfigDict(extra="ignore")
    id: str | int | None = None
    prompt: str | list[Message] = Field(min_length=1)
    response: str


Located = tuple[int, OutputRow]


@dataclass(frozen=True)
class Matched:
    """Both files' rows paired, in file A's order, with their line numbers; ``by`` says how."""

    a: Path
    b: Path
    by: Literal["id", "prompt"]
    pairs: list[tuple[Located, Located]]


class PairRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | int | None
    prompt: str | list[Message]
    a_line: int
    b_line: int
    a: str = Field(description="file A's response")
    b: str = Field(description="file B's response")
    winner: Winner = Field(description="A, B, tie or invalid, in the files' labels whatever order the judge saw")
    orders: list[Winner] = Field(description="each judged order's winner mapped back (A shown first, then B shown first; one for the rule judge)")
    raw: list[str] = Field(description="the judge's text for each order")


class JudgeResult(BaseModel):
    """What `hindsight judge` writes as judge.json: file A's responses against file B's."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    a: str
    b: str
    matched_by: Literal["id", "prompt"]
    judge: str
    profile: str | None
    persona: str = Field(description="the persona the judge was given (the rule judge decides by the profile's checks instead)")
    summary: WinRate
    rows: list[PairRecord]
    llm_usage: dict[str, UsageRecord] | None = Field(None, description="the judge's LLM calls, when an LLM judged")


def prompt_key(prompt: str | list[Message]) -> str:
    """A prompt as matching text: the text (or a lone user message's), stripped; longer conversations as JSON."""
    if isinstance(prompt, list) and len(prompt) == 1 and prompt[0]["role"] == "user":
        prompt = prompt[0]["content"]
    return prompt.strip() if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def match_files(a: Path, b: Path) -> Matched:
    """Read both files and pair their rows (see the module docstring); one-line UserInputErrors for anything amiss."""
    rows = {a: read_rows(a, OutputRow, EXPECTED), b: read_rows(b, OutputRow, EXPECTED)}
    by: Literal["id", "prompt"] = "id" if all(r.id is not None for side in rows.values() for _, r in side) else "prompt"
    index = {path: _index(path, side, by) for path, side in rows.items()}
    for path, other in ((a, b), (b, a)):
        missing = [located for key, located in index[path].items() if key not in index[other]]
        if missing:
            line, row = missing[0]
            what = f"id {row.id}" if by == "id" else "this prompt"
            more = f" (and {len(missing) - 1} more unmatched rows)" if len(missing) > 1 else ""
            raise UserInputError(f"no row with {what} in {other}{more}; both files must hold the same rows", path=path, line=line)
    pairs = [(located, index[b][key]) for key, located in index[a].items()]
    if by == "id":
        for (line_a, row_a), (line_b, row_b) in pairs:
            if prompt_key(row_a.prompt) != prompt_key(row_b.prompt):
                raise UserInputError(f"id {row_a.id}: the prompt differs from {b}:{line_b}", path=a, line=line_a)
    return Matched(a, b, by, pairs)


def _index(path: Path, rows: list[Located], by: Literal["id", "prompt"]) -> dict[str, Located]:
    index: dict[str, Located] = {}
    for line, row in rows:
        key = str(row.id) if by == "id" else prompt_key(row.prompt)
        if key in index:
            hint = "" if by == "id" else "; give every row of both files an id to pair them by id"
            raise UserInputError(f"duplicate {by} (first on line {index[key][0]}){hint}", path=path, line=line)
        index[key] = (line, row)
    return index


def judge_matched(judge: Judge, matched: Matched, persona: str, profile: str | None = None) -> JudgeResult:
    """Judge every pair, A = file A's response; pairwise judges ask both orders (see judges.pairwise)."""
    pairs = [Pair(r.prompt if isinstance(r.prompt, str) else tuple(r.prompt), r.response, rb.response) for (_, r), (_, rb) in matched.pairs]
    verdicts = judge.compare(pairs, persona=persona)
    rows = [PairRecord(id=ra.id, prompt=ra.prompt, a_line=la, b_line=lb, a=ra.response, b=rb.response, winner=v.winner, orders=list(v.orders), raw=list(v.raw))
            for ((la, ra), (lb, rb)), v in zip(matched.pairs, verdicts)]
    return JudgeResult(a=str(matched.a), b=str(matched.b), matched_by=matched.by, judge=judge.name, profile=profile, persona=persona,
                       summary=summarize(verdicts), rows=rows)


def summary_markdown(result: JudgeResult) -> str:
    """The win rate of A against B with its interval, the persona and the judge's LLM usage."""
    orders = "each pair judged in both orders" if len(result.rows[0].orders) == 2 else "one verdict per pair (an order-free judge)"
    lines = [f"# {Path(result.a).name} vs {Path(result.b).name}", "",
             f"`{result.a}` (A) against `{result.b}` (B): {len(result.rows)} rows paired by {result.matched_by}, judge `{result.judge}`"
             + (f", profile `{result.profile}`" if result.profile else "") + f"; {orders}; ties count half, invalid verdicts are left out.", "",
             *markdown_table("file", {"A": result.summary}), "", "Persona:", "", *(f"> {line}" for line in result.persona.strip().splitlines())]
    if result.llm_usage:
        lines += ["", *(f"LLM {role}: {u.describe()}." for role, u in result.llm_usage.items())]
    return "\n".join(lines) + "\n"
