"""The sweep spec (one YAML file) and the plan made from it: every cell's resolved RunConfig, and the control arms cells share.

    name: all_profiles             # the folder under results/ (default: the file's stem)
    profiles: all                  # a list of profile names or paths, or `all`: every benign shipped profile
    seeds: 1                       # a count (seeds 0, 1, …) or a list of seeds
    methods: [sdpo]                # default [sdpo]
    set: {interactions: 64}        # dotted overrides applied to every cell, as --set
    grid: {trainer.lr: [1e-5, 2e-5]}   # dotted key → values, crossed with everything else

A cell is one ordinary run (one profile, seed, method and grid point). A control arm's user sends only neutral messages,
so cells that differ only in the profile (and in what does not touch the control arm: the oracle, the simulator, jobs)
train the same control arm: it is trained once per group, scored against every profile of the group, and each cell
takes its own profile's records (``SharedControl``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import UserInputError
from core.yamlio import data_path, field_names, node_line, read_yaml, validate
from harness.config import RunConfig
from harness.overrides import Overrides, parse_set
from harness.schedule import Schedule

RESERVED = {"profile": "profiles", "method": "methods", "seed": "seeds", "seeds": "seeds"}
# every cell runs its arms one after another (the sweep runs cells side by side) and keeps no final weights (~0.5 GB a cell)
CELL_DEFAULTS = {"jobs": 1, "save_checkpoint": False}
MAX_CELLS = 5000  # more is surely a typo (seeds: 100000)
# fields that do not change what a control arm does: it has no profile, no oracle, a neutral user instead of the simulator
NOT_IN_CONTROL = ("profile", "oracle", "jobs", "save_checkpoint", "simulator")


class SweepSpec(BaseModel):
    """A sweep: profiles × seeds × methods × grid points, each an ordinary run with ``set`` applied."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="folder under results/ (default: the spec file's stem)")
    profiles: list[str] | str = Field(description="profile names or paths, or 'all' (every benign shipped profile)")
    seeds: int | list[int] = Field(1, description="a count (seeds 0 … N-1) or a list of seeds")
    methods: list[str] = Field(default_factory=lambda: ["sdpo"], description="methods (`hindsight personalize --help`)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted config keys → values, for every cell (as --set)")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted config keys → lists of values, crossed")

    @field_validator("profiles", mode="before")
    @classmethod
    def _profiles(cls, value: Any) -> Any:
        if value == "all":
            return value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError("a list of profile names or paths, or 'all'")
        if len(set(value)) < len(value):
            raise ValueError(f"'{next(v for v in value if value.count(v) > 1)}' is listed twice")
        return value

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> Any:
        if isinstance(value, bool) or not (isinstance(value, int) and value >= 1 or isinstance(value, list) and value
                                           and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and len(set(value)) == len(value)):
            raise ValueError("a count (at least 1) or a list of distinct integer seeds")
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value or len(set(map(str, value))) < len(value):
            raise ValueError("a non-empty list of distinct methods, e.g. [sdpo, rlhi-reward]")
        return value

    @field_validator("set", "grid", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("a mapping of dotted config keys, e.g. trainer.lr")
        return value

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class Cell:
    """One run of the sweep; ``control``: the shared control it takes its control arm from (None: it trains its own)."""

    id: str
    profile: str
    seed: int
    method: str
    grid: tuple[tuple[str, Any], ...]
    config: RunConfig
    schedule: Schedule
    control: str | None = None

    @property
    def variant(self) -> str:
        """What the cell's run does besides its profile and seed: the method and the grid point."""
        return " · ".join([self.method, *(f"{k}={v}" for k, v in self.grid)])

    def arms(self) -> int:
        """Arm processes it trains: the control comes from its shared control when it has one."""
        return len([a for a, _ in self.config.arms() if not (a == "control" and self.control)])


@dataclass(frozen=True)
class SharedControl:
    """The control arm of several cells, trained once and scored against each cell's profile (``labels``)."""

    id: str
    seed: int
    config: RunConfig
    schedule: Schedule
    cells: tuple[str, ...]

    def label(self, profile: str) -> str | None:
        """How the records scored for ``profile`` are labelled (None when only one profile is scored)."""
        return profile if len(self.schedule.scored) > 1 else None


@dataclass
class Plan:
    name: str
    source: Path
    spec: SweepSpec
    cells: list[Cell]
    controls: list[SharedControl] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """plan.json: what `hindsight sweep status` and the report read without rebuilding the plan."""
        return {
            "name": self.name, "spec": str(self.source),
            "cells": [{"id": c.id, "profile": c.profile, "seed": c.seed, "method": c.method, "grid": dict(c.grid), "variant": c.variant,
                       "control": c.control, "interactions": c.config.interactions, "arms": len(c.config.arms())} for c in self.cells],
            "controls": [{"id": s.id, "seed": s.seed, "profiles": [p.name for p in s.schedule.scored], "cells": list(s.cells),
                          "interactions": s.config.interactions, "arms": 1,
                          "budgets": [s.config.generation.max_new_tokens, s.config.eval.max_new_tokens]} for s in self.controls],
        }


def shipped_profiles() -> list[str]:
    """Every benign profile shipped in simulators/profiles/ (`all` in a spec)."""
    from simulators.profile import BUILTIN_DIR, load_profile_file

    return [p.stem for p in sorted(BUILTIN_DIR.glob("*.yaml")) if not load_profile_file(p).adversarial]


def load_spec(path: Path) -> tuple[SweepSpec, yaml.Node | None]:
    data, tree = read_yaml(path)
    try:
        return validate(SweepSpec, data, path=path, tree=tree), tree
    except UserInputError as exc:
        raise UserInputError(exc.message.removeprefix("Value error, "), path=exc.path, line=exc.line, field=exc.field) from None


def make_plan(path: Path, sets: list[str] | None = None, name: str | None = None) -> Plan:
    """The plan of the spec at ``path``, with ``sets`` (--set KEY=VALUE) over its ``set``; every cell's config validated and
    its inputs read (profiles, prompts, neutral pool), so a bad spec fails in a second with file:line:field."""
    from harness.runs import check_run_id, preflight
    from simulators.profile import load_profile

    spec, tree = load_spec(path)
    run_name = name or spec.name or path.stem
    try:
        check_run_id(run_name)
    except UserInputError:
        where = {} if name else {"path": path, "line": node_line(tree, ("name",)), "field": "name"} if spec.name else {"path": path}
        raise UserInputError(f"sweep name '{run_name}': use letters, digits, '.', '_' and '-' only (it names a folder under results/)"
                             + (" (--name)" if name else ""), **where) from None
    names = shipped_profiles() if spec.profiles == "all" else spec.profiles
    profiles = []
    for i, spec_name in enumerate(names):
        where = {"path": path, "line": node_line(tree, ("profiles", i)), "field": f"profiles.{i}" if spec.profiles != "all" else "profiles"}
        try:
            profile = load_profile(spec_name)
        except UserInputError as exc:
            raise UserInputError(exc.render(), **where) from None
        if profile.adversarial:
            raise UserInputError(f"profile '{profile.name}' is adversarial: a sweep runs personalization only (`hindsight redteam` runs it)", **where)
        profiles.append((spec_name, profile.name, where))
    if len({p[1] for p in profiles}) < len(profiles):
        raise UserInputError("two profiles have the same name", path=path, line=node_line(tree, ("profiles",)), field="profiles")
    for section, keys in (("set", spec.set), ("grid", spec.grid)):
        for key in keys:
            where = {"path": path, "line": node_line(tree, (section, key)), "field": f"{section}.{key}"}
            if str(key).split(".")[0] in RESERVED:
                raise UserInputError(f"'{key}' is set by the spec's own '{RESERVED[str(key).split('.')[0]]}' field", **where)
            if section == "grid" and not spec.grid[key]:
                raise UserInputError("give at least one value", **where)
    overrides = [(k, v, (f"set.{k}", node_line(tree, ("set", k)), True)) for k, v in spec.set.items()]
    for item in sets or []:
        key, value = parse_set(item)
        if key.split(".")[0] in RESERVED:
            raise UserInputError(f"--set {item}: '{key}' is set by the spec's own '{RESERVED[key.split('.')[0]]}' field")
        overrides.append((key, value, (f"--set {item}", None, False)))
    grid_keys = list(spec.grid)
    size = len(spec.seed_list()) * len(spec.methods) * len(profiles) * math.prod(len(v) for v in spec.grid.values())
    if size > MAX_CELLS:
        raise UserInputError(f"the spec makes {size} cells, more than {MAX_CELLS}: fewer seeds, profiles or grid values", path=path, line=1)
    points = list(itertools.product(*(list(enumerate(spec.grid[k])) for k in grid_keys)))
    seed_line = ("seeds", node_line(tree, ("seeds",)), True)
    cells: list[Cell] = []
    for seed, (m, method), point, (spec_name, profile_name, where) in itertools.product(spec.seed_list(), enumerate(spec.methods), points, profiles):
        data = Overrides(data={})
        blame: dict[str, tuple[str, int | None, bool]] = {}
        for key, value in CELL_DEFAULTS.items():
            data.set(key, value, "sweep")
        for key, value, origin in overrides:
            data.set(key, value, origin[0])
            blame[key] = origin
        for key, (v, value) in zip(grid_keys, point):
            data.set(key, value, f"grid.{key}")
            blame[key] = (f"grid.{key}", node_line(tree, ("grid", key, v)), True)
        for key, value, origin in (("profile", spec_name, (where["field"], where["line"], True)),
                                   ("method", method, (f"methods.{m}", node_line(tree, ("methods", m)), True)),
                                   ("seed", seed, seed_line), ("seeds", 1, seed_line)):
            data.set(key, value, origin[0])
            blame[key] = origin
        config = _cell_config(data.data, blame, path, node_line(tree, ("set",)) or 1)
        cell_id = "-".join([method, profile_name, *(f"{k.split('.')[-1]}_{_slug(v)}" for k, (_, v) in zip(grid_keys, point)), f"s{seed}"])
        try:
            config, schedule = preflight(config)
        except UserInputError as exc:
            raise UserInputError(f"cell {cell_id}: {exc.render()}", path=path) from None
        cells.append(Cell(check_run_id(cell_id), profile_name, seed, method, tuple((k, v) for k, (_, v) in zip(grid_keys, point)), config, schedule))
    if len({c.id for c in cells}) < len(cells):
        raise UserInputError("two cells get the same folder name: give grid values that differ once written as names", path=path,
                             line=node_line(tree, ("grid",)), field="grid")
    return share_controls(Plan(run_name, path, spec, cells))


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-") or "x"


def _cell_config(data: dict[str, Any], blame: dict[str, tuple[str, int | None, bool]], path: Path, set_line: int) -> RunConfig:
    """A cell's RunConfig; the first error names the spec field (and line) that set the offending config field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = data_path(data, error["loc"])
        config_field = ".".join(map(str, loc))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(field_names(RunConfig, loc[:-1])))
            message = f"unknown field (allowed here: {allowed})" if allowed else "unknown field"
        keys = [k for k in blame if config_field and (config_field == k or config_field.startswith(k + ".") or k.startswith(config_field + "."))]
        where, line, in_file = blame[max(keys, key=len)] if keys else ("set", set_line, True)
        if config_field and where.split(".", 1)[-1] != config_field and not where.startswith("--set"):
            message += f" (config field '{config_field}')"
        if not in_file:
            raise UserInputError(f"{where}: {message}") from None
        raise UserInputError(message, path=path, line=line, field=where) from None


def control_key(config: RunConfig) -> str | None:
    """What a control arm's run depends on, hashed; None when the cell's control arm cannot be shared: no control, a user
    who changes (flip, continual), a red-team run, or evaluation with the profile's persona in the prompt."""
    if not config.control or config.changes() or config.redteam is not None or config.eval.persona == "profile":
        return None
    data = {k: v for k, v in config.model_dump(mode="json").items() if k not in NOT_IN_CONTROL}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def share_controls(plan: Plan) -> Plan:
    """Group the cells whose control arms are the same run; a group of two or more shares one control."""
    groups: dict[str, list[Cell]] = {}
    for cell in plan.cells:
        key = control_key(cell.config)
        if key is not None:
            groups.setdefault(key, []).append(cell)
    controls, owner = [], {}
    for key, cells in groups.items():
        if len(cells) < 2:
            continue
        scored = tuple({c.schedule.scored[0].name: c.schedule.scored[0] for c in cells}.values())  # cells may differ in their simulator only
        digest = hashlib.sha256((key + "".join(sorted(p.name for p in scored))).encode()).hexdigest()[:8]  # not the spec's order
        first = cells[0]
        control_id = f"control-{first.method}-s{first.seed}-{digest}"
        config = first.config.model_copy(update={"control": True, "oracle": False})
        controls.append(SharedControl(control_id, first.seed, config, Schedule(((0, scored[0]),), scored), tuple(c.id for c in cells)))
        owner.update({c.id: control_id for c in cells})
    cells = [Cell(c.id, c.profile, c.seed, c.method, c.grid, c.config, c.schedule, owner.get(c.id)) for c in plan.cells]
    return Plan(plan.name, plan.source, plan.spec, cells, controls)
