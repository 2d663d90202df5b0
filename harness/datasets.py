"""Evaluation sets built from logged conversations: the WildChat-UserEval suite (per user, a reference history and the
held-out turns, answered by the evaluated model). The CLI's `hindsight data usereval` parses options and prints; the
work is here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.conversations import ImportResult, ImportSettings, read_conversations
from core.errors import UserInputError
from judges.followup import build_classifier
from suites.wildchat_usereval import BuildReport, UserEvalSettings, build_rows, split_users, write_rows


@dataclass
class UserEvalSplit:
    """The conversations read and the users kept, before any model is loaded."""

    data: ImportResult
    report: BuildReport


def split_usereval(file: str, filters: ImportSettings, settings: UserEvalSettings) -> UserEvalSplit:
    """Read ``file`` and keep the users with enough history; no user kept is a UserInputError."""
    data = read_conversations(file, filters)
    report = split_users(data, settings, build_classifier())
    if not report.users:
        raise UserInputError("no user has enough history; lower --min-conversations / --min-feedback", path=None if file.startswith("hf:") else file)
    return UserEvalSplit(data, report)


def answer_usereval(split: UserEvalSplit, settings: UserEvalSettings, out: Path, *, model: str, device: str = "auto", threads: int | None = 1) -> int:
    """Load ``model``, answer every held-out turn, write the suite rows to ``out``; returns the number of rows."""
    from core.policy import Policy, PolicySettings
    from core.runtime import quiet_libraries, set_threads

    quiet_libraries()
    set_threads(threads)
    policy = Policy.load(PolicySettings(model=model, device=device))  # type: ignore[arg-type]
    policy.model.eval().requires_grad_(False)
    rows = build_rows(split.report, policy, settings)
    write_rows(rows, out)
    return len(rows)
