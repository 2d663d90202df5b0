"""WildChat-UserEval (after the RLHI paper): per user, a reference history and five held-out conversations to answer.

From a conversation file with user ids: keep users with at least ``min_conversations`` conversations whose reference
history shows at least ``min_feedback`` follow-ups with feedback (the paper: ≥ 10 conversations and "substantial
feedback"; 100 users). Each user's conversations are ordered by timestamp (then file line); all but the last
``holdout`` are the reference history, from which the UserEval judge infers the persona; every assistant turn of the
held-out ones is an evaluation turn: its context (the conversation so far, cut like training histories) is the
prompt, the logged answer is the reference, and the evaluated model's answer is the response.

The suite file holds ``judges.usereval.UserEvalRow`` rows, exactly what `hindsight usereval` judges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from core.conversations import Conversation, ImportResult, tuples_of
from core.engine import HFEngine, SamplingParams
from core.followups import FollowupCase, FollowupClassifier
from core.policy import Message, Policy
from judges.usereval import UserEvalRow


class UserEvalSettings(BaseModel):
    """Which users and turns make the set, and how the evaluated model answers (the paper: T = 0.6, top-p = 0.9)."""

    model_config = ConfigDict(extra="forbid")
    min_conversations: int = Field(10, ge=2, description="users need at least this many conversations")
    holdout: int = Field(5, ge=1, description="the last N conversations of each user are held out for evaluation")
    min_feedback: int = Field(1, ge=0, description="users need at least this many follow-ups with feedback in their reference history")
    max_users: int | None = Field(None, ge=1, description="keep at most this many users (those with most conversations first)")
    history_conversations: int = Field(20, ge=1, description="the most recent N reference conversations go into the history the persona is inferred from")
    history_turn_chars: int = Field(1000, ge=50, description="history turns longer than this are cut (keeps the persona prompt small)")
    context_messages: int = Field(5, ge=1, description="an evaluation turn's prompt: the last N messages before the answer, starting on a user turn")
    max_prompt_tokens: int = Field(2048, ge=16, description="prompts longer than this keep their last tokens")
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    seed: int = 0


@dataclass
class UserSplit:
    user: str
    reference: list[Conversation]
    heldout: list[Conversation]
    feedback: int  # reattempt_with_feedback follow-ups in the reference conversations


@dataclass
class BuildReport:
    users_seen: int
    too_few_conversations: int
    too_little_feedback: int
    users: list[UserSplit]
    rows: int


def split_users(data: ImportResult, settings: UserEvalSettings, classifier: FollowupClassifier) -> BuildReport:
    """Group kept conversations by user, order them in time, keep users with enough history, split off the last ones."""
    by_user: dict[str, list[Conversation]] = defaultdict(list)
    for conversation in data.conversations:
        if conversation.user is not None:
            by_user[conversation.user].append(conversation)
    short = sparse = 0
    kept: list[UserSplit] = []
    for user, conversations in sorted(by_user.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(conversations) < max(settings.min_conversations, settings.holdout + 1):
            short += 1
            continue
        conversations.sort(key=lambda c: (c.timestamp or "", c.line))
        reference, heldout = conversations[: -settings.holdout], conversations[-settings.holdout :]
        tuples = [t for c in reference for t in tuples_of(c, settings.context_messages)]
        labels = classifier.classify([FollowupCase(t.request, t.answer, t.followup) for t in tuples])
        feedback = sum(label == "reattempt_with_feedback" for label in labels)
        if feedback < settings.min_feedback:
            sparse += 1
            continue
        kept.append(UserSplit(user, reference, heldout, feedback))
    kept = kept[: settings.max_users] if settings.max_users else kept
    rows = sum(len(c.messages) // 2 for s in kept for c in s.heldout)
    return BuildReport(users_seen=len(by_user), too_few_conversations=short, too_little_feedback=sparse, users=kept, rows=rows)


def evaluation_turns(split: UserSplit, settings: UserEvalSettings) -> list[tuple[str, list[Message], str]]:
    """(id, prompt messages, reference answer) for every assistant turn of the user's held-out conversations."""
    turns = []
    for conversation in split.heldout:
        messages = conversation.messages
        for turn in range(1, len(messages), 2):
            prompt = list(messages[max(0, turn - settings.context_messages) : turn])
            while prompt[0]["role"] != "user":
                prompt.pop(0)
            turns.append((f"{split.user}:{conversation.id}:{turn}", prompt, messages[turn]["content"]))
    return turns


def history_of(split: UserSplit, settings: UserEvalSettings) -> list[list[Message]]:
    """The most recent reference conversations, long turns cut, as message lists (UserEvalRow.history)."""
    cut = settings.history_turn_chars

    def clip(text: str) -> str:
        return text if len(text) <= cut else text[:cut].rstrip() + " […]"

    return [[{"role": m["role"], "content": clip(m["content"])} for m in c.messages] for c in split.reference[-settings.history_conversations :]]


def build_rows(report: BuildReport, policy: Policy, settings: UserEvalSettings, batch_size: int = 8) -> list[UserEvalRow]:
    """Answer every evaluation turn with ``policy`` (seeded sampling) and return the suite's rows."""
    torch.manual_seed(settings.seed)
    engine = HFEngine(policy, batch_size=batch_size)
    params = SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p)
    rows: list[UserEvalRow] = []
    for split in report.users:
        turns = evaluation_turns(split, settings)
        history = history_of(split, settings)
        contexts = [policy.encode_chat(prompt)[-settings.max_prompt_tokens :] for _, prompt, _ in turns]
        answers = engine.generate(contexts, params)
        rows.extend(UserEvalRow(id=i, prompt=prompt, response=a.text, reference=ref, history=list(history))
                    for (i, prompt, ref), a in zip(turns, answers, strict=True))
    return rows


def write_rows(rows: Sequence[UserEvalRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(r.model_dump_json(exclude_none=True) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
