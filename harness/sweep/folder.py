"""A sweep's folder, ``results/<sweep>/``, and the state of its tasks as recorded there.

    ``plan.json``       the cells and shared controls (what `hindsight sweep status` and the report read)
    ``spec.yaml``       the spec as given, and the command line
    ``sweep.log``       one line per driver session, task start (with its node) and task end (with its error)
    ``sessions.json``   each driver session: start, end, seconds, executor
    ``status/ID.json``  each task's last known state: queued, running, done or failed (with the error and traceback), node, seconds
    ``runs/ID/``        the cells: ordinary run folders (`hindsight show`, `compare`, `personalize --resume`)
    ``shared/ID/``      the shared control arms: runs of the control arm alone, scored for each of their cells' profiles
    ``locks/ID.lock``   held by the process running a task; ``driver.lock`` by the driver
    ``summary.md``, ``curve.png``, ``heatmap.png``   the report over profiles (harness/sweep/report.py)
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import UserInputError
from core.records import now
from harness.checkpoint import write_atomic
from harness.sweep.worker import finished, locked


class SweepFolder:
    """results/<sweep>/ and what the driver records there."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)

    def token(self) -> str:
        """The sweep's token: a worker that reads the same in ROOT/.token shares the driver's filesystem (kept across sessions,
        so a worker's scratch folder, named by it, stays the same)."""
        path = self.path(".token")
        if not path.is_file():
            write_atomic(path, secrets.token_hex(8))
        return path.read_text(encoding="utf-8").strip()

    def log(self, text: str) -> None:
        with self.path("sweep.log").open("a", encoding="utf-8") as handle:
            handle.write(f"{now()} {text}\n")

    def status(self, task_id: str) -> dict[str, Any]:
        path = self.path("status", f"{task_id}.json")
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def set_status(self, task_id: str, **fields: Any) -> None:
        self.path("status").mkdir(exist_ok=True)
        write_atomic(self.path("status", f"{task_id}.json"), json.dumps({**self.status(task_id), **fields}))

    def plan(self) -> dict[str, Any]:
        path = self.path("plan.json")
        if not path.is_file():
            raise UserInputError(f"{self.folder}: not a sweep folder (no plan.json); `hindsight sweep SPEC.yaml` starts one")
        return json.loads(path.read_text(encoding="utf-8"))

    def sessions(self) -> list[dict[str, Any]]:
        path = self.path("sessions.json")
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []

    @contextlib.contextmanager
    def driving(self) -> Iterator[None]:
        """Hold driver.lock: a second driver on the same sweep is refused."""
        import fcntl

        with self.path("driver.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserInputError(f"{self.folder}: another driver is running this sweep; `hindsight sweep status {self.folder.name}` shows it") from None
            yield


def sweep_folder(sweep: str, results: Path) -> SweepFolder:
    """A sweep's name (a folder under ``results``) or its path."""
    path = Path(sweep)
    folder = SweepFolder(path if (path / "plan.json").is_file() else results / sweep)
    folder.plan()
    return folder


def sweep_status(folder: SweepFolder) -> dict[str, Any]:
    """Every task's state (done, running, queued, failed, interrupted: a driver stopped while it ran, pending, or not needed:
    a shared control whose cells all came finished from another sweep) with its progress (interactions logged of those its arms will log), node, seconds and error."""
    plan = folder.plan()
    driver = locked(folder.path("driver.lock"))
    rows = []
    for kind, entries in (("control", plan["controls"]), ("cell", plan["cells"])):
        for entry in entries:
            run = folder.path("shared" if kind == "control" else "runs", entry["id"])
            status = folder.status(entry["id"])
            state = "done" if finished(run) else status.get("state", "pending")
            if state in ("running", "queued") and not driver:
                state = "interrupted"
            if state == "done" and status.get("state") == "failed":
                status["error"] = None
            logged = sum(status["arms"].values()) if status.get("arms") and state != "done" else _lines(run / "interactions.jsonl")
            total = entry["interactions"] * entry["arms"]
            rows.append({"id": entry["id"], "kind": kind, "state": state, "progress": min(logged / total, 1.0) if total else None,
                         "node": status.get("node"), "seconds": status.get("seconds"), "error": status.get("error"),
                         "adopted": status.get("adopted") if state == "done" else None})
    counts = {s: sum(r["state"] == s for r in rows if r["kind"] == "cell") for s in ("done", "running", "queued", "failed", "interrupted", "pending")}
    sessions = folder.sessions()
    return {"sweep": plan["name"], "path": str(folder.folder), "driver_running": driver, "cells": counts, "tasks": rows,
            "wall_seconds": sum(s["seconds"] or 0 for s in sessions), "sessions": len(sessions)}


def _lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
