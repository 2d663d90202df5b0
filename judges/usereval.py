"""UserEval (after the RLHI paper's WildChat UserEval): three pairwise axes, each a response against a reference response.

- **personalization**: which response suits this user better, by a persona summarized from the user's history;
- **instruction_following**: which does more faithfully what the request asks, and does it better (no persona);
- **overall**: which the user would rather receive, simulating the user (request and persona together).

Every axis is a ``PairwiseJudge`` with its own instructions: both orders, strict A / B / TIE parsing, invalid
verdicts counted and never scored. The persona comes from an LLM asked to summarize the user's past conversations
(or follow-ups); rows without history fall back to a given persona.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from core.errors import UserInputError
from core.llm_client import LLMClient
from core.policy import Message
from core.records import UsageRecord, WinRate, read_rows
from judges.backends import JudgeBackend
from judges.base import Pair, Verdict, Winner
from judges.pairwise import PairwiseJudge, markdown_table, render_conversation, summarize

_ANSWER = "Answer with exactly one of: A, B, TIE. Write nothing else."

AXES: dict[str, str] = {
    "personalization": f"""You compare two replies an AI assistant could give, judging only how well each one fits one particular user.

What we know about this user, summarized from their earlier conversations:
{{persona}}

Pick the reply that matches this user's stated and implied preferences better: the length, depth, tone, format and \
level of expertise they want, and anything they keep asking for. Do not judge which reply is more correct or more \
complete unless this user's preferences make that matter. The order in which the replies are shown means nothing. \
If they fit the user equally well, call it a tie.

{_ANSWER}""",
    "instruction_following": f"""You compare two replies an AI assistant could give to the same request.

Pick the reply that does what the request asks more faithfully — every explicit instruction, constraint and question \
in it — and whose content is more accurate and useful. Ignore style that the request does not ask for, and ignore \
which reply comes first. If neither is better, call it a tie.

{_ANSWER}""",
    "overall": f"""Put yourself in the place of the user described below and compare two replies an AI assistant could give you.

What we know about you, summarized from your earlier conversations:
{{persona}}

Pick the reply you would rather receive: weigh whether it does what you asked, how good its content is, and whether \
it suits the way you like to be answered. The order in which the replies are shown means nothing. If you would be \
equally happy with either, call it a tie.

{_ANSWER}""",
}
NEEDS_PERSONA = {"personalization": True, "instruction_following": False, "overall": True}

PERSONA_SYSTEM = """You read the past conversations of one user with an AI assistant and describe, for whoever answers \
this user next, how the user wants to be answered."""

PERSONA_USER = """Past conversations of one user (their requests, the assistant's replies, and their follow-ups):

{history}

In one short paragraph addressed to an assistant, describe this user's preferences for answers: length and depth, tone, \
format, level of expertise, and anything they repeatedly ask for or complain about. Only state what these conversations \
show; if they show no clear preference on something, leave it out. Write the paragraph only."""


class UserEvalRow(BaseModel):
    """One judged turn: the request (text or messages), the evaluated response, the reference response, and optionally
    the user's history (past conversations as message lists, or past messages/follow-ups as text)."""

    model_config = ConfigDict(extra="forbid")
    id: str | int | None = None
    prompt: str | list[Message] = Field(min_length=1)
    response: str
    reference: str
    history: list[str | list[Message]] | None = None


class RowResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | int | None
    persona: str | None
    verdicts: dict[str, Winner]
    raw: dict[str, list[str]]


class UserEvalResult(BaseModel):
    """What `hindsight usereval` writes as usereval.json."""

    model_config = ConfigDict(extra="forbid")
    judge: str
    axes: dict[str, WinRate]
    rows: list[RowResult]
    llm_usage: dict[str, UsageRecord] | None = Field(None, description="per role ('judge', 'persona'), when an LLM played it")


def load_rows(path: Path) -> list[UserEvalRow]:
    return [row for _, row in read_rows(path, UserEvalRow, "prompt, response, reference, optional history")]


def persona_messages(history: Sequence[str | Sequence[Message]]) -> list[Message]:
    """The persona-inference prompt for one user's history."""
    parts = [f"Conversation {k}:\n{render_conversation(entry)}" for k, entry in enumerate(history, start=1)]
    return [{"role": "system", "content": PERSONA_SYSTEM}, {"role": "user", "content": PERSONA_USER.format(history="\n\n".join(parts))}]


class UserEval:
    """The three axes over one judge backend; personas inferred by ``persona_client`` (cached per distinct history)."""

    def __init__(self, backend: JudgeBackend, persona_client: LLMClient | None = None):
        self.judges = {axis: PairwiseJudge(backend, system=system, name=axis) for axis, system in AXES.items()}
        self.persona_client = persona_client
        self.backend = backend
        self.name = f"usereval:{backend.name}"
        self._personas: dict[str, str] = {}

    def infer_persona(self, history: Sequence[str | Sequence[Message]]) -> str:
        if self.persona_client is None:
            raise UserInputError("rows with a history need an LLM to summarize it into a persona (--persona-model)")
        self.infer_personas([history])
        return self._personas[json.dumps(history, sort_keys=True)]

    def infer_personas(self, histories: Sequence[Sequence[str | Sequence[Message]]]) -> None:
        """Infer the persona of each distinct history not yet known, the LLM calls sent concurrently."""
        if self.persona_client is None:
            raise UserInputError("rows with a history need an LLM to summarize it into a persona (--persona-model)")
        todo = {key: history for history in histories if (key := json.dumps(history, sort_keys=True)) not in self._personas}
        texts = self.persona_client.complete_many([persona_messages(h) for h in todo.values()])
        self._personas.update((key, text.strip()) for key, text in zip(todo, texts))

    def evaluate(self, rows: Sequence[UserEvalRow], persona: str | None = None) -> UserEvalResult:
        """Judge every row on every axis; ``persona`` stands in for rows without a history. With an LLM backend all rows of
        an axis go in one batch (sent concurrently); other backends get one row at a time, as before."""
        histories = [r.history for r in rows if r.history]
        if histories:
            self.infer_personas(histories)
        personas = [self.infer_persona(r.history) if r.history else persona for r in rows]
        missing = [k for k, p in enumerate(personas, start=1) if not p]
        if missing:
            raise UserInputError(f"row {missing[0]} has no history and no persona was given (--persona or --profile)")
        pairs = [Pair(r.prompt if isinstance(r.prompt, str) else tuple(r.prompt), r.response, r.reference) for r in rows]
        step = len(rows) if getattr(self.backend, "concurrent", False) else 1
        verdicts: dict[str, list[Verdict]] = {}
        for axis, judge in self.judges.items():
            given = personas if NEEDS_PERSONA[axis] else [None] * len(rows)
            verdicts[axis] = [v for k in range(0, len(rows), max(step, 1)) for v in judge.compare_each(pairs[k : k + step], given[k : k + step])]
        return UserEvalResult(
            judge=self.name,
            axes={axis: summarize(v) for axis, v in verdicts.items()},
            rows=[RowResult(id=r.id, persona=p, verdicts={a: v[k].winner for a, v in verdicts.items()}, raw={a: list(v[k].raw) for a, v in verdicts.items()})
                  for k, (r, p) in enumerate(zip(rows, personas))],
        )


def summary_markdown(result: UserEvalResult, source: str) -> str:
    """The three win rates with their intervals, as a markdown table."""
    lines = [f"# UserEval: {source}", "", f"judge `{result.judge}`, {len(result.rows)} rows; response (A) against the reference (B), "
             "each row judged in both orders; ties count half, invalid verdicts are left out.", "",
             *markdown_table("axis", result.axes)]
    return "\n".join(lines) + "\n"
