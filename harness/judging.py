"""Judging files outside a run, for `hindsight usereval` and `hindsight judge`: build the judge, score, write the results.
The CLI parses the options into JudgeSettings, calls these and prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import UserInputError
from core.llm_client import LLMClient, LLMSettings
from core.records import usage_records, write_json
from judges import JudgeSettings, build_judge, llm_usage
from judges.backends import build_backend
from judges.usereval import UserEval, UserEvalResult, load_rows
from judges.usereval import summary_markdown as usereval_markdown
from judges.versus import JudgeResult, judge_matched, match_files
from judges.versus import summary_markdown as versus_markdown
from simulators.profile import load_profile


@dataclass
class UserEvalRun:
    result: UserEvalResult
    rows: int
    folder: Path


def usereval_files(rows_path: Path, settings: JudgeSettings, folder: Path, *, persona_model: str | None = None, persona_api_base: str | None = None,
                   persona_api_key_env: str | None = None, persona: str | None = None, profile: str | None = None,
                   concurrency: int = 8) -> UserEvalRun:
    """Judge a UserEval rows file on its three axes; writes usereval.json and summary.md into ``folder``. The persona model
    (default: an llm judge's model) summarizes each row's history; its base URL and key default to the judge's.
    ``concurrency``: the persona LLM's requests in flight at once (the judge's is in ``settings.llm``)."""
    if persona and profile:
        raise UserInputError("give --persona or --profile, not both")
    data = load_rows(rows_path)
    fallback = persona or (load_profile(profile).description if profile else None)
    backend = build_backend(settings)
    persona_spec = persona_model or (settings.llm.model if settings.llm else None)
    persona_client = None
    if persona_spec:
        api_base = persona_api_base or (settings.llm.api_base if settings.llm else None)
        api_key_env = persona_api_key_env or (settings.llm.api_key_env if settings.llm else None)
        persona_client = LLMClient(LLMSettings(model=persona_spec, api_base=api_base, api_key_env=api_key_env, max_tokens=200,
                                                    concurrency=concurrency))
    result = UserEval(backend, persona_client).evaluate(data, persona=fallback)
    result.llm_usage = usage_records({"judge": llm_usage(backend), "persona": persona_client.usage() if persona_client else None})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "usereval.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
    (folder / "summary.md").write_text(usereval_markdown(result, str(rows_path)), encoding="utf-8")
    return UserEvalRun(result, len(data), folder)


@dataclass
class VersusRun:
    result: JudgeResult
    matched_by: str
    folder: Path


def judge_two_files(a: Path, b: Path, settings: JudgeSettings, folder: Path, *, profile: str | None = None, persona: str | None = None) -> VersusRun:
    """A's responses against B's for one persona (a profile's description, or ``persona``); writes judge.json and summary.md."""
    chosen = load_profile(profile) if profile else None
    text = persona or (chosen.description if chosen else None)
    if not text:
        raise UserInputError("give --profile (or --persona): the user the judge decides for")
    matched = match_files(a, b)
    arbiter = build_judge(settings, chosen)
    assert arbiter is not None  # settings.kind is never none here
    result = judge_matched(arbiter, matched, text, chosen.name if chosen else None)
    result.llm_usage = usage_records({"judge": llm_usage(arbiter)})
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "judge.json", result)
    (folder / "summary.md").write_text(versus_markdown(result), encoding="utf-8")
    return VersusRun(result, matched.by, folder)
