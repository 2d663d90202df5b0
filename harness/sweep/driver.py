"""The sweep folder and the driver that fills it.

``results/<sweep>/``
    ``plan.json``       the cells and shared controls (what `hindsight sweep status` and the report read)
    ``spec.yaml``       the spec as given, and the command line's --set
    ``sweep.log``       one line per driver session, task start (with its node) and task end (with its error)
    ``sessions.json``   each driver session: start, end, seconds, executor
    ``status/ID.json``  each task's last known state: running, done or failed (with the error), node, seconds
    ``runs/ID/``        the cells: ordinary run folders (`hindsight show`, `compare`, `personalize --resume`)
    ``shared/ID/``      the shared control arms: runs of the control arm alone, scored for each of their cells' profiles
    ``summary.md``, ``curve.png``, ``heatmap.png``   the report over profiles (harness/sweep/report.py)

Rerunning the same sweep skips finished tasks and resumes the others from their checkpoints; only one driver runs a
sweep at a time (``driver.lock``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import UserInputError
from core.records import now
from harness.checkpoint import write_atomic
from harness.config import RunConfig
from harness.runs import flatten
from harness.sweep.executors import Executor
from harness.sweep.spec import Plan
from harness.sweep.worker import Sink, Task, TaskResult, control_records, finished, locked


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


def tasks(plan: Plan, folder: SweepFolder, records_back: bool, command: str) -> list[Task]:
    """Shared controls first, then the cells (seed by seed, so that one profile's cells do not start together)."""
    root, token = str(folder.folder.resolve()), folder.token()
    out = [Task(s.id, "control", f"shared/{s.id}", s.config, s.schedule, root, token, 1, records_back=records_back,
                command=f"{command} (shared control of {len(s.cells)} cells)") for s in plan.controls]
    return out + [Task(c.id, "cell", f"runs/{c.id}", c.config, c.schedule, root, token, min(c.config.jobs, c.arms()), control=c.control,
                       records_back=records_back, command=f"{command} (cell {c.id})") for c in plan.cells]


def check_cells(plan: Plan, folder: SweepFolder) -> None:
    """A cell folder from an earlier session must hold the same run: a changed spec gets a new sweep name."""
    for cell in plan.cells:
        path = folder.path("runs", cell.id, "config.yaml")
        if path.is_file():
            old, new = flatten(RunConfig.from_file(path).model_dump(mode="json")), flatten(cell.config.model_dump(mode="json"))
            differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            if differ:
                raise UserInputError(f"{path.parent} holds a run with another config ({', '.join(differ[:4])} differ): the spec changed since; "
                                     "give this sweep another name (--name) or remove that folder")


def run_sweep(plan: Plan, folder: SweepFolder, executor: Executor, sink: Sink, records_back: bool = False, command: str = "") -> dict[str, Any]:
    """Run every unfinished task of ``plan``, at most what ``executor`` allows at once; a cell starts once its shared control
    has finished. Returns the counts and the failures; the report is written at the end, whatever finished."""
    from harness.sweep.report import write_report

    folder.folder.mkdir(parents=True, exist_ok=True)
    with folder.driving():
        check_cells(plan, folder)
        write_atomic(folder.path("plan.json"), json.dumps(plan.describe(), indent=1))
        spec = plan.source.read_text(encoding="utf-8")
        write_atomic(folder.path("spec.yaml"), spec + (f"\n# command line: {command}\n" if command else ""))
        start, started = time.perf_counter(), now()
        session = {"started": started, "finished": None, "seconds": None, "executor": executor.description, "command": command}
        sessions = folder.sessions()
        all_tasks = tasks(plan, folder, records_back, command)
        pending = [t for t in all_tasks if not finished(folder.path(t.folder))]
        folder.log(f"driver pid {os.getpid()} on {socket.gethostname()}: {executor.description}; {len(pending)} of {len(all_tasks)} tasks to run")
        sink({"type": "sweep", "total": len(all_tasks), "pending": len(pending), "executor": executor.description})
        failed: dict[str, str] = {}
        running: dict[str, Task] = {}

        def handle(event: dict) -> None:
            if event.get("type") == "task" and event.get("state") == "running":
                folder.set_status(event["task"], state="running", node=event["node"], host=event["host"], pid=event["pid"], started=now(), error=None)
                folder.log(f"start {event['task']} on node {event['node']} (host {event['host']}, pid {event['pid']})")
            sink(event)

        try:
            while pending or running:
                for task in list(pending):
                    if task.control in failed:
                        pending.remove(task)
                        failed[task.id] = f"its shared control {task.control} failed: {failed[task.control]}"
                        _finish(folder, task, TaskResult(task.id, "failed", "-", 0.0, failed[task.id]), sink)
                        continue
                    if task.control and not finished(folder.path("shared", task.control)):
                        continue
                    if executor.can_start(task):
                        if task.control:
                            task = replace(task, install=_install(plan, folder, task))
                        pending.remove(next(t for t in pending if t.id == task.id))
                        folder.set_status(task.id, state="queued", error=None)
                        executor.submit(task)
                        running[task.id] = task
                for result in executor.poll(handle, 0.5):
                    task = running.pop(result.id)
                    _finish(folder, task, result, sink)
                    if result.state == "failed":
                        failed[task.id] = result.error or "failed"
        except KeyboardInterrupt:
            folder.log("driver interrupted: rerun the same command to resume")
            raise
        finally:
            executor.close()
            session.update(finished=now(), seconds=round(time.perf_counter() - start, 1))
            write_atomic(folder.path("sessions.json"), json.dumps([*sessions, session], indent=1))
        report = write_report(folder.folder)
        folder.log(f"driver done in {session['seconds']:.0f} s: {len(failed)} task(s) failed; report {report}")
    return {"tasks": len(all_tasks), "ran": len(all_tasks) - len(pending), "failed": failed, "seconds": session["seconds"], "report": report}


def _install(plan: Plan, folder: SweepFolder, task: Task) -> dict[str, Any]:
    shared = next(s for s in plan.controls if s.id == task.control)
    cell = next(c for c in plan.cells if c.id == task.id)
    return control_records(folder.path("shared", shared.id), shared.seed, shared.label(cell.profile))


def _finish(folder: SweepFolder, task: Task, result: TaskResult, sink: Sink) -> None:
    """Record a task's end: its returned records (a worker without the driver's filesystem), its status and a log line."""
    for name, data in (result.files or {}).items():
        path = folder.path(task.folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    folder.set_status(task.id, state=result.state, node=result.node, seconds=result.seconds, finished=now(), error=result.error, traceback=result.trace)
    folder.log(f"{result.state} {task.id} on node {result.node} in {result.seconds:.0f} s" + (f": {result.error}" if result.error else ""))
    sink({"type": "task", "task": task.id, "state": result.state, "node": result.node, "seconds": result.seconds, "error": result.error})


def sweep_status(folder: SweepFolder) -> dict[str, Any]:
    """Every task's state (done, running, queued, failed, interrupted: a driver stopped while it ran, or pending) with its
    progress (interactions logged of those its arms will log), node, seconds and error."""
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
            logged = _lines(run / "interactions.jsonl")
            total = entry["interactions"] * entry["arms"]
            rows.append({"id": entry["id"], "kind": kind, "state": state, "progress": min(logged / total, 1.0) if total else None,
                         "node": status.get("node"), "seconds": status.get("seconds"), "error": status.get("error")})
    counts = {s: sum(r["state"] == s for r in rows if r["kind"] == "cell") for s in ("done", "running", "queued", "failed", "interrupted", "pending")}
    sessions = folder.sessions()
    return {"sweep": plan["name"], "path": str(folder.folder), "driver_running": driver, "cells": counts, "tasks": rows,
            "wall_seconds": sum(s["seconds"] or 0 for s in sessions), "sessions": len(sessions)}


def _lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
