"""User profiles: one YAML file each.

A profile has a ``name``, a ``description`` (the persona text that LLM simulators and judges see), an optional
``opposite`` (for preference flips), optional machine-checkable ``checks`` (each with what a scripted user says
when the check fails) and ``satisfied`` (what the user says when every check passes). An ``adversarial`` profile
is a user who pushes the model toward harm: its checks pass when an answer shows the harm, and it only runs
under ``hindsight redteam``.

Where profiles are found, first match wins: a path given to ``--profile``; folders in ``$HINDSIGHT_PROFILES``
(separated by ``:``); ``./profiles/`` in the working directory; the built-in ``simulators/profiles/``.
Adding a profile = dropping ``NAME.yaml`` into one of those folders.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import UserInputError
from core.yamlio import load_model_file

BUILTIN_DIR = Path(__file__).parent / "profiles"

# Named patterns usable as `pattern:` in forbid/require checks. Any other value is read as a Python regex.
PATTERNS: dict[str, str] = {
    "emoji": "[\U0001f300-\U0001faff\U0001f000-\U0001f2ff\u2600-\u27bf\u2b50\u2b55\u2705\u274c\u203c\u2049\ufe0f]",
    "markdown_list": r"(?m)^\s*(?:[-*+\u2022]|\d+[.)])\s+\S",
    "heading": r"(?m)^\s*#{1,6}\s+\S",
    "bold": r"\*\*[^*\n]+\*\*|__[^_\n]+__",
    "code_block": r"```",
    "table": r"(?m)^\s*\|.*\|\s*$",
    "markdown": r"(?m)^\s*(?:[-*+\u2022]|\d+[.)]|#{1,6})\s+\S|\*\*[^*\n]+\*\*|```|^\s*\|.*\|\s*$",
    "exclamation": r"!",
    "question": r"\?",
    "first_person": r"\b(?:I|I'm|I've|I'd|I'll)\b|\b(?i:me|my|mine|myself)\b",
    "hedging": r"(?i)\b(?:generally|typically|usually|often|perhaps|possibly|might|it depends|in most cases|tends? to|can vary)\b",
    "filler_praise": r"(?i)(?:great|good|excellent|fantastic|wonderful) question|happy to help|glad you asked|i hope this helps|"
    r"feel free to|what a (?:great|wonderful|fascinating)|you're absolutely right|absolutely!|certainly!",
    "preamble": r"(?i)^\s*(?:sure|certainly|of course|absolutely|great|good question|hello|hi|hey|well|okay|ok|here(?:'s| is| are))\b",
    "contraction": r"(?i)\b\w+'(?:s|re|ve|ll|d|t|m)\b",
    "slang": r"(?i)\b(?:gonna|wanna|gotta|kinda|sorta|yeah|yep|nope|cool|awesome|super|stuff|guys|folks|btw|lol|tbh)\b",
    "formal": r"(?i)\b(?:furthermore|moreover|therefore|consequently|additionally|thus|hence|in conclusion|it is important to note)\b",
    "analogy": r"(?i)\b(?:like a|like an|think of|imagine|for example|for instance|similar to)\b",
    "technical": r"(?i)\b(?:algorithm|parameter|function|variable|mechanism|coefficient|protocol|molecule|equation|theorem|latency|syntax)\b",
    "opinion": r"(?i)\b(?:I recommend|I'd recommend|I suggest|my pick|the best (?:choice|option) is|go with|I would choose)\b",
}


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(PATTERNS.get(pattern, pattern))


def words(text: str) -> int:
    return len(text.split())


def sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if re.search(r"\w", s)])


def pick(options: list[str], key: str) -> str:
    """Deterministic choice among phrasings, keyed by the text being answered."""
    index = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)
    return options[index]


class _CheckBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    followup: list[str] = Field(min_length=1, description="what a scripted user says when the check fails")
    label: str | None = Field(None, min_length=1, description="a short name for reports (default: the check spelled out)")

    @field_validator("followup", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def describe(self) -> str:
        raise NotImplementedError

    def short(self) -> str:
        """A few words for tables: the label, else the check spelled out (a custom regex is not spelled out)."""
        return self.describe()


class CountCheck(_CheckBase):
    """Word or sentence limits."""

    kind: Literal["max_words", "min_words", "max_sentences", "min_sentences"]
    value: int = Field(ge=0)

    def passes(self, text: str) -> bool:
        count = words(text) if self.kind.endswith("words") else sentences(text)
        return count <= self.value if self.kind.startswith("max") else count >= self.value

    def describe(self) -> str:
        return self.label or f"{'at most' if self.kind.startswith('max') else 'at least'} {self.value} {self.kind.split('_')[1]}"


class PatternCheck(_CheckBase):
    """A named pattern (see PATTERNS) or a Python regex that must not (forbid) or must (require) occur."""

    kind: Literal["forbid", "require"]
    pattern: str = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            _regex(value)
        except re.error as exc:
            raise ValueError(f"not a named pattern ({', '.join(PATTERNS)}) nor a valid regex: {exc}") from None
        return value

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return _regex(self.pattern)

    def passes(self, text: str) -> bool:
        found = self.regex.search(text) is not None
        return not found if self.kind == "forbid" else found

    def describe(self) -> str:
        return self.label or f"{self.kind} {self.pattern}"

    def short(self) -> str:
        return self.label or f"{self.kind} {self.pattern}" if self.label or self.pattern in PATTERNS else f"{self.kind} a custom regex"


Check = Annotated[CountCheck | PatternCheck, Field(discriminator="kind")]


class Profile(BaseModel):
    """A simulated user's preferences."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$", description="lowercase id; also the file's stem")
    description: str = Field(min_length=10, description="persona text shown to LLM simulators and judges")
    opposite: str | None = Field(None, description="name of the profile with the opposite preference")
    adversarial: bool = Field(False, description="a user who pushes toward harm (red-teaming only: `hindsight redteam`); its checks measure the harm")
    checks: list[Check] = Field(default_factory=list)
    satisfied: list[str] = Field(
        default_factory=lambda: ["Thanks, that works.", "Perfect, that's what I needed.", "Great, got it."],
        min_length=1,
        description="what the user says when every check passes",
    )

    @field_validator("satisfied", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _not_own_opposite(self) -> Profile:
        if self.opposite == self.name:
            raise ValueError("a profile cannot be its own opposite")
        return self

    def min_words(self) -> int:
        """The largest word minimum among the checks (0 when there is none)."""
        return max((int(c.value) for c in self.checks if getattr(c, "kind", None) == "min_words"), default=0)

    def failures(self, text: str) -> list[Check]:
        return [check for check in self.checks if not check.passes(text)]

    def complies(self, text: str) -> bool:
        return not self.failures(text)

    def scripted_followup(self, prompt: str, response: str) -> tuple[str, bool]:
        """What a rule-following user says: the first failed check's complaint, else a satisfied reply."""
        failed = self.failures(response)
        key = prompt + "\x00" + response
        if failed:
            return pick(failed[0].followup, key), False
        return pick(self.satisfied, key), True


def combine_profiles(profiles: Sequence[Profile]) -> Profile:
    """A user holding every preference in ``profiles`` at once: the descriptions joined and the checks' union (earlier
    profiles' complaints first); the first profile's satisfied replies."""
    if len(profiles) == 1:
        return profiles[0]
    return Profile(
        name="_and_".join(p.name for p in profiles),
        description="\n\n".join(p.description.strip() for p in profiles),
        checks=[check for p in profiles for check in p.checks],
        satisfied=profiles[0].satisfied,
    )


def search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("HINDSIGHT_PROFILES", "").split(os.pathsep) if p]
    return [*extra, Path.cwd() / "profiles", BUILTIN_DIR]


def load_profile_file(path: Path) -> Profile:
    profile = load_model_file(Profile, path)
    if profile.name != path.stem:
        raise UserInputError(f"name '{profile.name}' must match the file name '{path.stem}'", path=path, field="name")
    return profile


def available_profiles() -> dict[str, Path]:
    """name -> file, first match on the search path wins."""
    found: dict[str, Path] = {}
    for folder in search_path():
        if folder.is_dir():
            for file in sorted(folder.glob("*.yaml")):
                found.setdefault(file.stem, file)
    return found


def load_profile(spec: str) -> Profile:
    """A profile by name (search path) or by path to a YAML file."""
    if spec.endswith((".yaml", ".yml")) or os.sep in spec:
        return load_profile_file(Path(spec))
    known = available_profiles()
    if spec not in known:
        raise UserInputError(f"unknown profile '{spec}'; `hindsight profiles list` shows the {len(known)} known ones, or pass a .yaml path")
    return load_profile_file(known[spec])
