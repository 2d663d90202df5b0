"""A benchmark suite: one YAML file with a name and a list of entries, each one benchmark run on a checkpoint.

Entry kinds (``ENTRY_TYPES``; a new one is one file with an ``@entry_type`` class, imported in suites/__init__.py):

* ``lm_eval`` (suites/lmeval.py) — an lm-eval task or group by name (from lm-eval's registry; hub data), or from a local task folder
  (``path``, relative to the suite file) whose task YAMLs load local files;
* ``alpaca_eval`` (suites/alpacaeval.py) — the checkpoint's answers to a set of instructions against reference answers, annotated by any of
  our judge backends through alpaca-eval's own ``evaluate`` (win rate and length-controlled win rate);
* ``usereval`` (suites/generative.py) — UserEval's three axes (personalization, instruction-following, overall) on a built set: the
  checkpoint's responses against the set's reference responses;
* ``personalization`` (suites/generative.py) — the checkpoint's answers to held-out prompts against a reference model's, judged for a
  profile (win rate), and the share that passes the profile's checks.

``load_suite("quick")`` reads ``suites/quick.yaml``; a path reads that file. Bad files give one line naming the file,
the line and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from core.errors import UserInputError
from core.registry import Registry
from core.yamlio import read_yaml, validate
from judges import JudgeSettings

SUITES = Path(__file__).parent
Limit = Annotated[float, Field(gt=0, description="items per task: an integer count, or a fraction below 1")]


class SuiteEntry(BaseModel):
    """One benchmark of a suite. An entry type is a subclass with ``kind: Literal["its-kind"]``, registered with
    ``@entry_type`` (one line): the suite file then accepts its kind, and ``hindsight eval`` runs it with ``run``."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    name: str | None = Field(None, description="label in results and reports (default: the task or kind)")

    judged: ClassVar[bool] = False  # ``hindsight eval --judge`` replaces this entry's judge (and so enters its cache key)
    uses_lm_backend: ClassVar[bool] = False  # runs on the hf/vllm backend (which enters its cache key); else always hf

    def label(self) -> str:
        raise NotImplementedError

    def missing_inputs(self, suite: Suite, online: Callable[[], bool]) -> list[str]:
        """What this entry needs that is not here: by default its local ``data`` file. ``online()`` says (once asked,
        cached) whether the hub is reachable, for entries that read hub data."""
        data = getattr(self, "data", None)
        if isinstance(data, str) and not data.startswith("hf:") and not suite.resolve(data).is_file():
            return [f"{self.label()} (file {suite.resolve(data)})"]
        return []

    def run(self, run: EntryRun) -> tuple[dict[str, Any], dict[str, Any]]:
        """The entry's metrics (name → suites.results.MetricResult) and details, on ``run.model``."""
        raise NotImplementedError


_Entry = SuiteEntry  # the former private name

ENTRY_TYPES: Registry[type[SuiteEntry]] = Registry("suite entry type")


@dataclass(frozen=True)
class EntryRun:
    """What running one entry gets: its suite (for relative paths), the evaluated model, and the eval options."""

    suite: Suite
    model: Any  # suites.runner.Checkpoint: ``.policy`` (loaded on first use) and ``.lm()`` (lm-eval's model object)
    model_name: str
    limit: float | None = None
    batch_size: int = 8
    device: str = "auto"
    judge: JudgeSettings | None = None  # replaces the judge of ``judged`` entries


def item_count(limit: float | None, total: int) -> int:
    """How many of ``total`` items a limit keeps: an integer count, or a fraction below 1 (at least one item)."""
    if limit is None:
        return total
    return max(1, min(total, int(limit) if limit >= 1 else round(limit * total)))


E = TypeVar("E", bound=type[SuiteEntry])


def entry_type(cls: E) -> E:
    """Register an entry type (a ``SuiteEntry`` subclass) under its ``kind`` literal; suite files accept it from then on."""
    (kind,) = get_args(cls.model_fields["kind"].annotation)
    ENTRY_TYPES.add(kind, cls)
    _rebuild_suite()
    return cls


class Suite(BaseModel):
    """A named list of benchmark entries."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    entries: list[SuiteEntry] = Field(min_length=1, description="the benchmarks; each entry's kind is a registered entry type")
    _file: Path = PrivateAttr(default=Path("."))

    @property
    def file(self) -> Path:
        return self._file

    def resolve(self, relative: str) -> Path:
        """A path written in the suite, relative to the suite file's folder."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self._file.parent / path


def remove_entry_type(kind: str) -> None:
    """Forget an entry type (for tests that register one for a while)."""
    ENTRY_TYPES.remove(kind)
    _rebuild_suite()


def _rebuild_suite() -> None:
    """Make ``Suite.entries`` the tagged union of the registered entry types (by ``kind``)."""
    types = tuple(ENTRY_TYPES.entry(kind).factory for kind in ENTRY_TYPES.names())
    item = types[0] if len(types) == 1 else Annotated[Union[types], Field(discriminator="kind")]  # noqa: UP007
    Suite.model_fields["entries"].annotation = list[item]  # type: ignore[valid-type]
    Suite.model_rebuild(force=True)


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
