"""From options to a checked RunConfig and a run folder: the steps `hindsight personalize` and ``harness.personalize`` share.

``set_path`` writes one dotted override into a config mapping, ``validate`` turns the mapping into a RunConfig (a
UserInputError naming the field, and the file it came from), ``check`` runs the checks that must pass before any model
loads (the profiles exist and none is adversarial outside a red-team run, the token budgets, the prompt source), and
``new_run_id``/``check_run_id`` name the folder under ``results/``.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import UserInputError
from harness.config import RunConfig


def set_path(data: dict, dotted: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``dotted`` 'a.b.c', creating sections on the way (a UserInputError when one is a value)."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict) or key not in node or node.get(key) is None else node[key]
        if not isinstance(node, dict):
            raise UserInputError(f"--set {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def validate(data: dict, source: Path | None = None) -> RunConfig:
    """The RunConfig of ``data``; the first error is a UserInputError naming its field (and ``source``, the config file)."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UserInputError(first["msg"], path=source, field=field or None) from None


def check(config: RunConfig) -> RunConfig:
    """The checks before a run starts, cheap and model-free: every profile loads (and none is adversarial outside
    ``redteam``), the token budgets are filled in for the profiles' word minimums, the prompt source loads."""
    from core.prompts import load_prompts
    from harness.schedule import build_schedule

    config = config.with_budgets(max(p.min_words() for p in build_schedule(config).scored))
    load_prompts(config.prompts)
    return config


def run_kind(config: RunConfig) -> str:
    """The method, and the kind of run when it is not plain personalization (redteam, flip, continual): part of a run id."""
    if config.redteam is not None:
        return f"{config.method}-redteam"
    return f"{config.method}-flip" if config.flip_at is not None else f"{config.method}-continual" if config.continual else config.method


def new_run_id(profile: str, method: str, results: Path) -> str:
    """``YYYYmmdd-HHMMSS-METHOD-PROFILE``, with a ``-2``, ``-3``, … suffix when that folder exists under ``results``."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", Path(profile).stem.lower())
    base = f"{datetime.now():%Y%m%d-%H%M%S}-{method}-{stem}"
    run_id, n = base, 1
    while (results / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is a safe folder name (letters, digits, '.', '_', '-'; no '..'), else a UserInputError."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", run_id) or ".." in run_id:
        raise UserInputError(f"--run-id '{run_id}': use letters, digits, '.', '_' and '-' only (it names a folder under results/)")
    return run_id
