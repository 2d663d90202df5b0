"""Runs on disk, read for people and programs: find a run folder, read its files with file:line errors, check a config
before it runs, and the summaries behind `hindsight runs`, `show` and `compare` (also their --json documents)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from core.errors import UserInputError, pydantic_message, read_text
from core.records import METRIC, EvalRecord, RunInfo, TrainRecord
from harness.curves import METRICS, TRAINED, by_preference, curves

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.schedule import Schedule

RUN_FILES = ("curve.png", "flip.png", "retention.png", "summary.md", "redteam.md", "redteam.png", "interactions.jsonl")


def new_run_id(profile: str, kind: str, results: Path) -> str:
    """date-kind-profile, with -2, -3, … when that folder exists."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", Path(profile).stem.lower())
    base = f"{datetime.now():%Y%m%d-%H%M%S}-{kind}-{stem}"
    run_id, n = base, 1
    while (results / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def check_run_id(run_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", run_id) or ".." in run_id:
        raise UserInputError(f"--run-id '{run_id}': use letters, digits, '.', '_' and '-' only (it names a folder under results/)")
    return run_id


def run_kind(config: RunConfig) -> str:
    """The method, and the experiment when it is not plain personalization: sdpo, sdpo-flip, rlhi-reward-redteam, …"""
    if config.redteam is not None:
        return f"{config.method}-redteam"
    return f"{config.method}-flip" if config.flip_at is not None else f"{config.method}-continual" if config.continual else config.method


def resume_command(config: dict[str, Any], run: str) -> str:
    """The command that continues a run: the one its kind of experiment is started with."""
    verb = ("redteam" if config.get("redteam") else "flip" if config.get("flip_at") is not None
            else "continual" if config.get("continual") else "personalize")
    return f"hindsight {verb} --resume {run}"


def run_dir(run: str, results: Path) -> Path:
    """A run id (a folder under ``results``) or a path to a run folder."""
    path = Path(run)
    if not path.is_dir():
        path = results / run
    if not (path / "config.yaml").is_file():
        raise UserInputError(f"{run}: not a run folder (no config.yaml); `hindsight runs` lists runs")
    return path


def read_config(folder: Path) -> dict[str, Any]:
    """A run's config.yaml as plain data; unreadable YAML or not a mapping is a UserInputError naming file:line."""
    from core.yamlio import read_yaml

    data, _ = read_yaml(folder / "config.yaml")
    if not isinstance(data, dict):
        raise UserInputError("expected a mapping of fields", path=folder / "config.yaml", line=1)
    return data


def read_info(folder: Path) -> RunInfo | None:
    """run.json, or None for a run killed before it wrote one."""
    path = folder / "run.json"
    if not path.is_file():
        return None
    try:
        return RunInfo.model_validate_json(read_text(path))
    except ValidationError as exc:
        field, message = pydantic_message(exc)
        raise UserInputError(message, path=path, field=field or None) from None


def read_evals(folder: Path) -> list[EvalRecord]:
    """The evaluation records of metrics.jsonl (see ``read_metrics``)."""
    return [r for r in read_metrics(folder) if isinstance(r, EvalRecord)]


def peak_memory(folder: Path) -> dict[str, float]:
    """Peak resident memory (GB) of the process that ran each arm ("treated/s0": 4.9), from its last update record."""
    out: dict[str, float] = {}
    for record in read_metrics(folder):
        if isinstance(record, TrainRecord) and record.peak_memory_gb is not None:
            out[f"{record.arm}/s{record.seed}"] = max(out.get(f"{record.arm}/s{record.seed}", 0.0), record.peak_memory_gb)
    return out


def read_metrics(folder: Path) -> list[Any]:
    """The records of metrics.jsonl; a line that is not JSON or not a record is a UserInputError naming file:line
    (a last line cut by a crash is left out, as --resume would)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    lines = read_text(path).split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cut = number == len(lines)  # no newline after it
        try:
            record = METRIC.validate_python(json.loads(line))
        except json.JSONDecodeError as exc:
            if cut:
                break
            raise UserInputError(f"not JSON ({exc.msg})", path=path, line=number) from None
        except ValidationError as exc:
            field, message = pydantic_message(exc)
            raise UserInputError(f"not a metrics record ({field + ': ' if field else ''}{message})", path=path, line=number) from None
        out.append(record)
    return out


def check_resumable(folder: Path) -> None:
    """A finished run has nothing to resume: say so (and change nothing)."""
    info = read_info(folder)
    if info is not None and info.status == "finished":
        raise UserInputError(f"{folder.name} finished ({info.finished or 'earlier'}); nothing to resume. "
                             f"`hindsight show {folder.name}` summarises it; `--resume {folder.name} --seeds N` adds seeds to it; "
                             f"start a new run with --config {folder / 'config.yaml'}")


def preflight(config: RunConfig) -> tuple[RunConfig, Schedule]:
    """Everything a run reads before it trains, read now so a bad input fails in a second, not after the model loads:
    the profiles (and the answer budgets they need), the prompts and the neutral pool. Returns the config with budgets
    and the run's schedule (its profiles, read once: pass it to ``harness.loop.personalize``)."""
    from core.prompts import load_prompts
    from harness.schedule import build_schedule
    from simulators.neutral import load_pool

    schedule = build_schedule(config)
    config = config.with_budgets(max(p.min_words() for p in schedule.scored))
    load_prompts(config.prompts)
    load_pool(config.neutral_pool)
    check_api_keys(config.model_dump(mode="json"))
    return config, schedule


def check_api_keys(data: Any, where: str = "") -> None:
    """Every ``api_key_env`` in the config names a set variable: an unset one is reported now, not as a failing provider
    after the model has loaded and the retries are spent."""
    import os

    if isinstance(data, dict):
        name = data.get("api_key_env")
        if isinstance(name, str) and name and not os.environ.get(name):
            raise UserInputError(f"the environment variable {name} is not set or empty (field '{where}api_key_env', the API key of "
                                 f"{data.get('model') or 'the LLM'}); export it, or name another variable")
        for key, value in data.items():
            check_api_keys(value, f"{where}{key}.")


def _last(evals: list[EvalRecord]) -> list[dict[str, Any]]:
    """Per arm, its last evaluation: each metric's mean and 95% interval (numbers, for --json)."""
    rows = []
    for arm in ("initial", "oracle", *TRAINED):
        metrics: dict[str, Any] = {}
        x = 0
        for field, _, share in METRICS:
            series = curves(evals, field, share).get(arm)
            if series:
                p = series[-1]
                metrics[field] = {"mean": p.mean, "low": p.low, "high": p.high, "seeds": p.seeds}
                x = p.interactions
        if metrics:
            rows.append({"arm": arm, "interactions": x, "metrics": metrics})
    return rows


def run_row(folder: Path) -> dict[str, Any]:
    """One line of `hindsight runs`: id, status, profile, last clean compliance of each arm, seconds."""
    info = read_info(folder)
    config = read_config(folder)
    groups = by_preference(read_evals(folder))
    clean = curves(groups[0][1], "clean", True) if groups else {}
    return {
        "run": folder.name, "path": str(folder), "status": info.status if info else None, "profile": config.get("profile"),
        "method": config.get("method", "sdpo"), "clean": {a: clean[a][-1].mean for a in ("treated", "guarded", "control", "oracle") if a in clean},
        "seconds": info.seconds if info else None,
    }


def list_runs(results: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs under ``results`` (a row each), and one line for each run whose files cannot be read (file:line, why)."""
    rows, broken = [], []
    for folder in sorted(p for p in results.glob("*") if (p / "config.yaml").is_file()):
        try:
            rows.append(run_row(folder))
        except UserInputError as exc:
            broken.append(exc.render())
    return rows, broken


def run_summary(folder: Path) -> dict[str, Any]:
    """What `hindsight show` prints, as data: the run's info and config, per preference scored the last evaluation of
    each arm (means with 95% intervals) and the verdict, and the files it wrote."""
    from harness.curves import load_train
    from harness.report import skipped_updates, verdict

    info = read_info(folder)
    config = read_config(folder)
    evals = read_evals(folder)
    preferences = [{"preference": name, "arms": _last(group), "verdict": verdict(group)} for name, group in by_preference(evals)]
    return {
        "run": folder.name, "path": str(folder), "status": info.status if info else None,
        "info": info.model_dump(mode="json") if info else None, "config": config, "preferences": preferences, **change_report(config, evals),
        "skipped_updates": skipped_updates(load_train(folder)), "files": [str(folder / name) for name in RUN_FILES if (folder / name).exists()],
    }


def change_report(config: dict[str, Any], evals: list[EvalRecord]) -> dict[str, Any]:
    """The parts of `show` beyond the per-arm tables, as data: ``flip`` (lags, a flip run), ``retention`` (a continual run),
    ``irrelevant`` (a run whose control user sends another neutral pool), each with its printed ``lines``."""
    from dataclasses import asdict

    from harness.changes import flip_lags, retention, section
    from harness.report import irrelevant_followups

    out: dict[str, Any] = {}
    total, flip_at, stage = config.get("interactions", 0), config.get("flip_at"), (config.get("continual") or {}).get("stage")
    lines = section(evals, flip_at, stage, total)
    if lines:
        rows = flip_lags(evals, flip_at) if flip_at is not None else retention(evals, stage, total)
        out["flip" if flip_at is not None else "retention"] = {"rows": [asdict(r) for r in rows], "lines": lines}
    groups = by_preference(evals)
    reference = (config.get("trainer") or {}).get("advantage_reference", "neutral") if config.get("method", "sdpo") == "sdpo" else None
    text = irrelevant_followups(config.get("neutral_pool", "builtin"), reference, groups[0][1]) if evals else ""
    if text:
        out["irrelevant"] = text
    return out


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def compare_runs(folders: list[Path]) -> dict[str, Any]:
    """The config fields that differ between runs (seed aside), each trained arm's last evaluation per run, and the runs
    left out of the table with the reason (no evaluation of a trained arm yet)."""
    configs = [flatten(read_config(f)) for f in folders]
    differ = [k for k in dict.fromkeys(k for c in configs for k in c) if len({repr(c.get(k)) for c in configs}) > 1 and k != "seed"]
    rows, dropped = [], []
    for folder, config in zip(folders, configs):
        found = False
        for name, evals in by_preference(read_evals(folder)):
            for row in _last(evals):
                if row["arm"] in TRAINED:
                    found = True
                    rows.append({"run": folder.name, "fields": {k: config.get(k) for k in differ}, "preference": name, **row})
        if not found:
            info = read_info(folder)
            status = info.status if info else "no run.json"
            dropped.append({"run": folder.name, "reason": f"no evaluation of a trained arm in metrics.jsonl ({status})"})
    return {"differ": differ, "rows": rows, "dropped": dropped}
