"""Logged conversations (WildChat / WildFeedback style) → interaction tuples (history, assistant answer, next user message).

A conversation is one JSON object a line (or one row of a Hugging Face dataset, ``hf:NAME[:SPLIT]``) holding a list of
``{role, content}`` turns under ``conversation`` (WildChat's name) or ``messages``, with optional user id (``user_id``,
or WildChat's ``hashed_ip``), ``language``, ``model``, ``timestamp`` and id (``conversation_hash``, ``conversation_id``
or ``id``); other fields are ignored. Turns alternate user / assistant, starting with the user.

Every record that cannot be used is skipped and reported with its line: *invalid* ones (not JSON, not an object, no
turns, a turn that is not ``{role: user|assistant, content: non-empty text}``, turns out of order) and *filtered* ones
(too few messages, a turn or the whole conversation too long, another language). Nothing in a record stops the import.

Each assistant turn that the user answered gives one tuple: the history is the conversation up to and including the
request, cut to its last ``context_messages`` messages and then to start on a user turn; the follow-up is the user's
next message (the SDPO paper's offline setup: last 5 messages; conversations over 100k characters, turns over 4096
characters or under 3 messages dropped).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import UserInputError, read_bytes
from core.followups import FOLLOWUP_TYPES, FollowupCase, FollowupClassifier, FollowupType
from core.policy import Message

TURN_KEYS = ("conversation", "messages")
USER_KEYS = ("user_id", "hashed_ip", "user")
ID_KEYS = ("conversation_hash", "conversation_id", "id")
ROLES = ("user", "assistant")


class ImportSettings(BaseModel):
    """Which conversations to keep and how to cut them into tuples (defaults: the SDPO paper's offline filters)."""

    model_config = ConfigDict(extra="forbid")
    max_turn_chars: int = Field(4096, ge=1, description="drop a conversation with any turn longer than this (characters)")
    max_conversation_chars: int = Field(100_000, ge=1, description="drop a conversation longer than this in all (characters)")
    min_messages: int = Field(3, ge=2, description="drop a conversation with fewer messages (3 = at least one follow-up)")
    languages: list[str] | None = Field(None, description="keep only these languages (case-insensitive, e.g. English); None keeps all")
    context_messages: int = Field(5, ge=1, description="history kept before an answer: the last N messages, then cut to start on a user turn")
    max_conversations: int | None = Field(None, ge=1, description="read at most this many records (a sample of a large file or dataset)")


@dataclass(frozen=True)
class Conversation:
    line: int  # line of the file (row number + 1 for a dataset)
    id: str
    user: str | None
    language: str | None
    model: str | None
    timestamp: str | None
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class Skipped:
    """A record left out: ``kind`` invalid (malformed) or filtered (well-formed, excluded by a setting)."""

    line: int
    kind: str
    code: str
    message: str


@dataclass
class InteractionTuple:
    conversation: str
    user: str | None
    line: int
    turn: int  # index of the answer within the conversation's messages
    history: list[Message]
    answer: str
    followup: str
    language: str | None = None
    model: str | None = None
    followup_type: FollowupType | None = None

    @property
    def request(self) -> str:
        return self.history[-1]["content"]


@dataclass
class ImportResult:
    source: str
    records: int
    conversations: list[Conversation]
    skipped: list[Skipped]
    tuples: list[InteractionTuple] = field(default_factory=list)


class ImportStats(BaseModel):
    """What `hindsight data stats` reports (and `--json` prints)."""

    model_config = ConfigDict(extra="forbid")
    source: str
    records: int = Field(description="non-blank lines (or dataset rows) read")
    conversations: int = Field(description="records kept")
    invalid: dict[str, int] = Field(description="malformed records by reason")
    filtered: dict[str, int] = Field(description="well-formed records excluded by a filter, by reason")
    tuples: int
    answers_without_followup: int = Field(description="assistant turns that end their conversation (no tuple)")
    users: int = Field(description="distinct user ids among kept conversations")
    conversations_without_user: int
    conversations_per_user: dict[str, float] = Field(description="min, median, max over users")
    messages_per_conversation: dict[str, float] = Field(description="min, median, max")
    tuples_per_conversation: float
    languages: dict[str, int]
    models: dict[str, int]
    followup_types: dict[str, int] = Field(description="tuples per follow-up type (classifier named in followup_classifier)")
    followup_classifier: str | None
    mean_chars: dict[str, float] = Field(description="mean characters of request, answer and follow-up over tuples")
    skipped: list[dict[str, Any]] = Field(description="every skipped record: line, kind, reason")


class _Bad(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(message)


# ----- reading -------------------------------------------------------------------------------------
def read_conversations(source: str, settings: ImportSettings | None = None) -> ImportResult:
    """Every record of ``source`` (a JSONL path or ``hf:NAME[:SPLIT]``), parsed and filtered; bad records are reported in
    ``skipped`` with their line, never raised. A missing or unreadable source is a UserInputError."""
    settings = settings or ImportSettings()
    kept: list[Conversation] = []
    skipped: list[Skipped] = []
    records = 0
    for line, record in _records(source, settings.max_conversations):
        records += 1
        try:
            conversation = parse_record(record, line)
        except _Bad as bad:
            skipped.append(Skipped(line, "invalid", bad.code, bad.message))
            continue
        reason = filter_reason(conversation, settings)
        if reason is not None:
            skipped.append(Skipped(line, "filtered", *reason))
        else:
            kept.append(conversation)
    return ImportResult(source=source, records=records, conversations=kept, skipped=skipped)


def load_tuples(source: str, settings: ImportSettings | None = None, classifier: FollowupClassifier | None = None) -> ImportResult:
    """``read_conversations`` plus the tuples of the kept conversations (labelled by ``classifier`` when given)."""
    settings = settings or ImportSettings()
    result = read_conversations(source, settings)
    result.tuples = [t for c in result.conversations for t in tuples_of(c, settings.context_messages)]
    if classifier is not None:
        label_followups(result.tuples, classifier)
    return result


def _records(source: str, limit: int | None) -> Iterator[tuple[int, Any]]:
    """(line, decoded JSON or a _Bad) per non-blank line; each line is decoded on its own so one bad byte spoils one record."""
    rows = _hf_rows(source[3:]) if source.startswith("hf:") else _jsonl_rows(Path(source))
    for count, item in enumerate(rows):
        if limit is not None and count >= limit:
            return
        yield item


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    data = read_bytes(path, missing="no such conversation file (JSONL, one conversation a line)")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, _Bad("not_utf8", f"not UTF-8 (byte 0x{raw[exc.start]:02x})")
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, _Bad("not_json", f"not JSON ({exc.msg} at column {exc.colno})")
        except RecursionError:
            yield number, _Bad("not_json", "not JSON (nested too deeply)")


def _hf_rows(spec: str) -> Iterator[tuple[int, Any]]:
    name, _, split = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise UserInputError(f"hf:{spec} needs the `datasets` package (pip install 'hindsight[datasets]') and the hub or its cache") from None
    try:
        rows = datasets.load_dataset(name, split=split or "train", streaming=True)
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure is the user's to fix
        raise UserInputError(f"hf:{spec}: could not load ({type(exc).__name__}: {exc})") from None
    yield from enumerate(rows, start=1)


def parse_record(record: Any, line: int) -> Conversation:
    """One record → a Conversation, or _Bad naming what is wrong."""
    if isinstance(record, _Bad):
        raise record
    if not isinstance(record, dict):
        raise _Bad("not_object", f"expected a JSON object, got {type(record).__name__}")
    turns = next((record[k] for k in TURN_KEYS if k in record), None)
    if not isinstance(turns, list) or not turns:
        raise _Bad("no_turns", "no 'conversation' (or 'messages') list of turns")
    messages: list[Message] = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise _Bad("bad_turn", f"turn {number} is not an object with role and content")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise _Bad("bad_role", f"turn {number}: role {json.dumps(role)[:40]} is not user or assistant")
        if not isinstance(content, str):
            raise _Bad("bad_content", f"turn {number}: content is {type(content).__name__}, not text")
        if not content.strip():
            raise _Bad("empty_turn", f"turn {number}: empty {role} turn")
        expected = ROLES[(number - 1) % 2]
        if role != expected:
            raise _Bad("order", f"turn {number}: {role} turn out of order (turns alternate user, assistant, …, starting with the user)")
        messages.append({"role": role, "content": content})
    return Conversation(
        line=line,
        id=_text(next((record[k] for k in ID_KEYS if record.get(k) is not None), None)) or f"line-{line}",
        user=_text(next((record[k] for k in USER_KEYS if record.get(k) is not None), None)),
        language=_text(record.get("language")),
        model=_text(record.get("model")),
        timestamp=_text(record.get("timestamp")),
        messages=tuple(messages),
    )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def filter_reason(conversation: Conversation, settings: ImportSettings) -> tuple[str, str] | None:
    """(code, message) of the first filter the conversation fails, or None."""
    messages = conversation.messages
    if len(messages) < settings.min_messages:
        return "too_few_messages", f"{len(messages)} messages, fewer than {settings.min_messages}"
    longest = max(range(len(messages)), key=lambda k: len(messages[k]["content"]))
    if len(messages[longest]["content"]) > settings.max_turn_chars:
        return "turn_too_long", f"turn {longest + 1} has {len(messages[longest]['content'])} characters, over {settings.max_turn_chars}"
    total = sum(len(m["content"]) for m in messages)
    if total > settings.max_conversation_chars:
        return "conversation_too_long", f"{total} characters, over {settings.max_conversation_chars}"
    if settings.languages is not None:
        wanted = {lang.lower() for lang in settings.languages}
        if (conversation.language or "").lower() not in wanted:
            return "language", f"language {conversation.language or 'unknown'} not in {', '.join(settings.languages)}"
    return None


# ----- tuples ----------------------------------------------------------------------------------------
def tuples_of(conversation: Conversation, context_messages: int = 5) -> list[InteractionTuple]:
    """One tuple per assistant turn followed by a user turn (see the module docstring for the history cut)."""
    messages = conversation.messages
    out = []
    for turn in range(1, len(messages) - 1, 2):
        history = list(messages[max(0, turn - context_messages) : turn])
        while history and history[0]["role"] != "user":
            history.pop(0)
        if not history:  # context_messages too small to hold the request itself
            history = [messages[turn - 1]]
        out.append(InteractionTuple(
            conversation=conversation.id, user=conversation.user, line=conversation.line, turn=turn, history=history,
            answer=messages[turn]["content"], followup=messages[turn + 1]["content"], language=conversation.language, model=conversation.model,
        ))
    return out


def label_followups(tuples: Sequence[InteractionTuple], classifier: FollowupClassifier) -> None:
    """Set each tuple's ``followup_type`` from one batched call of ``classifier``."""
    labels = classifier.classify([FollowupCase(t.request, t.answer, t.followup) for t in tuples])
    for t, label in zip(tuples, labels, strict=True):
        t.followup_type = label


# ----- stats ----------------------------------------------------------------------------------------
def import_stats(result: ImportResult, classifier: str | None = None) -> ImportStats:
    conversations, tuples = result.conversations, result.tuples
    per_user = Counter(c.user for c in conversations if c.user is not None)
    lengths = [len(c.messages) for c in conversations]
    answers = sum(len(c.messages) // 2 for c in conversations)
    types = Counter(t.followup_type for t in tuples if t.followup_type)
    return ImportStats(
        source=result.source,
        records=result.records,
        conversations=len(conversations),
        invalid=dict(Counter(s.code for s in result.skipped if s.kind == "invalid").most_common()),
        filtered=dict(Counter(s.code for s in result.skipped if s.kind == "filtered").most_common()),
        tuples=len(tuples),
        answers_without_followup=answers - len(tuples),
        users=len(per_user),
        conversations_without_user=sum(1 for c in conversations if c.user is None),
        conversations_per_user=_spread(list(per_user.values())),
        messages_per_conversation=_spread(lengths),
        tuples_per_conversation=round(len(tuples) / len(conversations), 2) if conversations else 0.0,
        languages=dict(Counter(c.language or "unknown" for c in conversations).most_common()),
        models=dict(Counter(c.model or "unknown" for c in conversations).most_common()),
        followup_types={k: types[k] for k in FOLLOWUP_TYPES} if classifier else {},
        followup_classifier=classifier,
        mean_chars={
            part: round(statistics.fmean(len(getattr(t, part)) for t in tuples), 1) if tuples else 0.0
            for part in ("request", "answer", "followup")
        },
        skipped=[{"line": s.line, "kind": s.kind, "reason": s.message} for s in result.skipped],
    )


def _spread(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else {}


def describe_stats(stats: ImportStats) -> list[str]:
    """`hindsight data stats` as plain lines: totals, skipped records by reason and line, tuples, users, follow-up types."""
    skipped = len(stats.skipped)
    lines = [
        (f"{stats.source}: {stats.records} records → {stats.conversations} conversations kept, {skipped} skipped "
         f"({sum(stats.invalid.values())} invalid, {sum(stats.filtered.values())} filtered)"),
        f"tuples: {stats.tuples} ({stats.tuples_per_conversation} per conversation; {stats.answers_without_followup} answers had no follow-up)",
        f"users: {stats.users} with ids ({_fmt(stats.conversations_per_user)} conversations each), {stats.conversations_without_user} conversations without one",
        f"messages per conversation: {_fmt(stats.messages_per_conversation)}",
        "mean characters: " + ", ".join(f"{k} {v:.0f}" for k, v in stats.mean_chars.items()),
        "languages: " + ", ".join(f"{k} {v}" for k, v in stats.languages.items()),
        "models: " + ", ".join(f"{k} {v}" for k, v in stats.models.items()),
    ]
    if stats.followup_types:
        lines.append(f"follow-up types ({stats.followup_classifier}): " + ", ".join(f"{k} {v}" for k, v in stats.followup_types.items()))
    for kind, counts in (("invalid", stats.invalid), ("filtered", stats.filtered)):
        if counts:
            lines.append(f"{kind}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines += [f"  line {s['line']}: {s['kind']}: {s['reason']}" for s in stats.skipped]
    return lines


def _fmt(spread: dict[str, float]) -> str:
    return f"min {spread['min']:g}, median {spread['median']:g}, max {spread['max']:g}" if spread else "–"
