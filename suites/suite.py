"""A benchmark suite: one YAML file with a name and a list of entries, each one benchmark run on a checkpoint.

Entry kinds:

* ``lm_eval`` — an lm-eval task or group by name (from lm-eval's registry; hub data), or from a local task folder
  (``path``, relative to the suite file) whose task YAMLs load local files;
* ``alpaca_eval`` — the checkpoint's answers to a set of instructions against reference answers, annotated by any of
  our judge backends through alpaca-eval's own ``evaluate`` (win rate and length-controlled win rate);
* ``usereval`` — UserEval's three axes (personalization, instruction-following, overall) on a built set: the
  checkpoint's responses against the set's reference responses;
* ``personalization`` — the checkpoint's answers to held-out prompts against a reference model's, judged for a
  profile (win rate), and the share that passes the profile's checks.

``load_suite("quick")`` reads ``suites/quick.yaml``; a path reads that file. Bad files give one line naming the file,
the line and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from core.errors import UserInputError
from core.yamlio import read_yaml, validate
from judges import BACKENDS, JudgeSettings

SUITES = Path(__file__).parent
Limit = Annotated[float, Field(gt=0, description="items per task: an integer count, or a fraction below 1")]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="label in results and reports (default: the task or kind)")

    def label(self) -> str:
        raise NotImplementedError


class LMEvalEntry(_Entry):
    """An lm-eval task (or group) run through lm-eval's Python API."""

    kind: Literal["lm_eval"]
    task: str = Field(min_length=1, description="lm-eval task or group name, e.g. ifeval, mmlu_pro, hellaswag")
    path: str | None = Field(None, description="local task folder (relative to the suite file) holding the task's YAML")
    metrics: list[str] | None = Field(None, description="metrics to report, e.g. [prompt_level_loose_acc] (default: all)")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples (default: the task's own)")
    limit: Limit | None = None
    gen_kwargs: dict[str, Any] | None = Field(None, description="generation overrides, e.g. {max_gen_toks: 256}")
    data: list[str] = Field(default_factory=list, description="hub datasets the task needs (named when they are missing offline)")

    def label(self) -> str:
        return self.name or self.task


class AlpacaEvalEntry(_Entry):
    """alpaca-eval's pairwise evaluation: win rate and length-controlled win rate of the checkpoint against references."""

    kind: Literal["alpaca_eval"]
    data: str = Field(description="JSON or JSONL of {instruction, output} (output = the reference answer), relative to the suite "
                                  "file; or hf:REPO[/CONFIG][:SPLIT] (needs the hub)")
    annotator: JudgeSettings = Field(default_factory=lambda: JudgeSettings(kind="local", model="smollm2-135m"),
                                     description="the judge backend: kind llm (any litellm model) or local (a local model's verdict-token probabilities)")
    max_new_tokens: int = Field(256, ge=1, description="longest answer of the evaluated model")
    limit: Limit | None = None

    def label(self) -> str:
        return self.name or "alpaca_eval"

    @field_validator("annotator")
    @classmethod
    def _backend(cls, judge: JudgeSettings) -> JudgeSettings:
        if judge.kind not in BACKENDS:
            raise ValueError(f"the annotator's kind must be a judge backend: {' or '.join(BACKENDS.names())}")
        return judge


class UserEvalEntry(_Entry):
    """UserEval's three axes on a built set; the evaluated model writes each row's response."""

    kind: Literal["usereval"]
    data: str = Field(description="JSONL of {prompt, reference, history?, id?}, relative to the suite file")
    judge: JudgeSettings = Field(default_factory=lambda: JudgeSettings(kind="local", model="smollm2-135m"), description="kind llm or local")
    persona: str | None = Field(None, description="persona text for rows without a history")
    profile: str | None = Field(None, description="a profile whose description is the persona of rows without a history")
    persona_model: str | None = Field(None, description="litellm model summarizing histories into personas (default: the judge's, with kind llm)")
    max_new_tokens: int = Field(256, ge=1)
    limit: Limit | None = None

    def label(self) -> str:
        return self.name or "usereval"

    @model_validator(mode="after")
    def _checked(self) -> UserEvalEntry:
        if self.judge.kind not in BACKENDS:
            raise ValueError(f"the judge's kind must be a judge backend: {' or '.join(BACKENDS.names())}")
        if self.persona and self.profile:
            raise ValueError("give persona or profile, not both")
        return self


class PersonalizationEntry(_Entry):
    """Win rate against a reference model's answers on held-out prompts, judged for a profile, and the profile's compliance."""

    kind: Literal["personalization"]
    profile: str = Field("concise", description="profile name or path (relative to the suite file)")
    prompts: str = Field("builtin", description="'builtin' or a JSONL of prompts (the held-out split is used)")
    n: int = Field(32, ge=1, description="held-out prompts")
    reference: str = Field("smollm2-135m", description="the model whose answers the checkpoint's are judged against (usually the untrained one)")
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="rules (the profile's checks, offline), llm or local")
    max_new_tokens: int = Field(128, ge=1)

    def label(self) -> str:
        return self.name or f"personalization-{Path(self.profile).stem}"


Entry = Annotated[LMEvalEntry | AlpacaEvalEntry | UserEvalEntry | PersonalizationEntry, Field(discriminator="kind")]


class Suite(BaseModel):
    """A named list of benchmark entries."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    entries: list[Entry] = Field(min_length=1)
    _file: Path = PrivateAttr(default=Path("."))

    @property
    def file(self) -> Path:
        return self._file

    def resolve(self, relative: str) -> Path:
        """A path written in the suite, relative to the suite file's folder."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self._file.parent / path


def suite_path(spec: str) -> Path:
    """``NAME`` → suites/NAME.yaml (shipped); anything with a slash or a .yaml/.yml suffix is a path."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", spec) and not spec.endswith((".yaml", ".yml")):
        path = SUITES / f"{spec}.yaml"
        if not path.is_file():
            known = ", ".join(available_suites())
            raise UserInputError(f"--suite {spec}: no such suite (shipped: {known}; or give a path to a suite YAML)")
        return path
    return Path(spec).expanduser()


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES.glob("*.yaml"))


def load_suite(spec: str) -> Suite:
    """Read and validate a suite; task folders must exist and labels be distinct (missing data files are reported when
    the suite runs, together with any missing hub data)."""
    path = suite_path(spec)
    data, tree = read_yaml(path)
    suite = validate(Suite, data, path=path, tree=tree)
    suite._file = path.resolve()
    seen: dict[str, int] = {}
    for index, entry in enumerate(suite.entries):
        label = entry.label()
        if label in seen:
            raise UserInputError(f"two entries are labelled '{label}' (entries {seen[label]} and {index}); give one a distinct name",
                                 path=path, line=_entry_line(tree, index), field=f"entries.{index}.name")
        seen[label] = index
        path_field = getattr(entry, "path", None)
        if path_field is not None and not suite.resolve(path_field).is_dir():
            raise UserInputError(f"no task folder {suite.resolve(path_field)}", path=path, line=_entry_line(tree, index, "path"), field=f"entries.{index}.path")
    return suite


def _entry_line(tree, index: int, field: str | None = None) -> int | None:
    from core.yamlio import node_line

    return node_line(tree, ("entries", index, field) if field else ("entries", index))
