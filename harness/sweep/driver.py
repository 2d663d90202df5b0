"""The driver: run a plan's tasks on an executor into the sweep folder (harness/sweep/folder.py), shared controls before
the cells that take their control arm from them, and write the report at the end.

Rerunning the same sweep skips finished tasks and resumes the others from their checkpoints; only one driver runs a
sweep at a time (``driver.lock``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import UserInputError
from core.records import now
from core.runtime import sigterm_as_interrupt
from harness.checkpoint import write_atomic
from harness.config import RunConfig
from harness.runs import flatten
from harness.sweep.executors import Executor
from harness.sweep.folder import SweepFolder
from harness.sweep.spec import Plan, SharedControl, control_key
from harness.sweep.worker import Sink, Task, TaskResult, control_records, finished


def tasks(plan: Plan, folder: SweepFolder, records_back: bool, command: str) -> list[Task]:
    """Shared controls first, then the cells (seed by seed, so that one profile's cells do not start together)."""
    root, token = str(folder.folder.resolve()), folder.token()
    out = [Task(s.id, "control", f"shared/{s.id}", s.config, s.schedule, root, token, 1, records_back=records_back,
                command=f"{command} (shared control of {len(s.cells)} cells)") for s in plan.controls]
    return out + [Task(c.id, "cell", f"runs/{c.id}", c.config, c.schedule, root, token, min(c.config.jobs, c.arms()), control=c.control,
                       records_back=records_back, command=f"{command} (cell {c.id})") for c in plan.cells]


def _key(config: RunConfig) -> str:
    return json.dumps(flatten(config.model_dump(mode="json")), sort_keys=True)


def _differences(path: Path, config: RunConfig) -> list[str]:
    """The dotted keys where the run config at ``path`` differs from ``config``."""
    old, new = flatten(RunConfig.from_file(path).model_dump(mode="json")), flatten(config.model_dump(mode="json"))
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def check_cells(plan: Plan, folder: SweepFolder) -> None:
    """A cell folder from an earlier session must hold the same run: a changed spec gets a new sweep name."""
    for cell in plan.cells:
        path = folder.path("runs", cell.id, "config.yaml")
        if path.is_file() and (differ := _differences(path, cell.config)):
            raise UserInputError(f"{path.parent} holds a run with another config ({', '.join(differ[:4])} differ): the spec changed since; "
                                 "give this sweep another name (--name) or remove that folder")


def adopt_finished(plan: Plan, folder: SweepFolder) -> dict[str, Path]:
    """Copy in, rather than run again, what another sweep in the same results folder finished with the same config,
    whatever that sweep named it: cells (a cell's records depend on its config alone: its control arm, shared or not, too),
    then shared controls that are still needed (the same control config, and the other scored at least the profiles this
    one scores). A shared control whose cells are all finished is not needed. Returns task id → the run it came from."""
    adopted: dict[str, Path] = {}
    todo = [c for c in plan.cells if not finished(folder.path("runs", c.id))]
    done: dict[str, Path] = {}
    if todo:
        for path in sorted(folder.folder.parent.glob("*/runs/*/config.yaml")):
            if path.parents[2].resolve() != folder.folder.resolve() and finished(path.parent):
                done.setdefault(_key(RunConfig.from_file(path)), path.parent)
    for cell in todo:
        if (other := done.get(_key(cell.config))) is not None:
            adopted[cell.id] = _copy_run(other, folder, "runs", cell.id)
    for control in plan.controls:
        if finished(folder.path("shared", control.id)):
            continue
        if not needed(control.cells, folder):
            folder.set_status(control.id, state="not needed", error=None)
            continue
        if folder.status(control.id).get("state") == "not needed":
            folder.set_status(control.id, state="pending")
        if (other := _finished_control(control, folder)) is not None:
            adopted[control.id] = _copy_run(other, folder, "shared", control.id)
    return adopted


def _copy_run(other: Path, folder: SweepFolder, kind: str, task_id: str) -> Path:
    """Copy a finished run into this sweep as ``kind/task_id`` (the run's own name follows its new folder); mark it done."""
    target = folder.path(kind, task_id)
    if target.exists():
        shutil.rmtree(target)  # an unfinished attempt at the same run
    shutil.copytree(other, target)
    if other.name != task_id:
        info = json.loads((target / "run.json").read_text(encoding="utf-8"))
        write_atomic(target / "run.json", json.dumps({**info, "run_id": task_id}, indent=2))
        if (target / "summary.md").is_file():
            text = (target / "summary.md").read_text(encoding="utf-8")
            write_atomic(target / "summary.md", text.replace(other.name, task_id))
    folder.set_status(task_id, state="done", node="-", seconds=0.0, finished=now(), error=None, traceback=None, adopted=str(other))
    folder.log(f"adopted {task_id} from {other} (the same config, finished there)")
    return other


def _finished_control(control: SharedControl, folder: SweepFolder) -> Path | None:
    """A finished shared control, in this results folder under any sweep and id, that is the run ``control`` would train
    and whose records are labelled the way its cells read them: every profile it needs scored, by name when it scores
    several (``SharedControl.label``), unlabelled when it scores one."""
    key, names = control_key(control.config), [p.name for p in control.schedule.scored]
    for plan_file in sorted(folder.folder.parent.glob("*/plan.json")):
        for other in json.loads(plan_file.read_text(encoding="utf-8")).get("controls", []):
            path = plan_file.parent / "shared" / other["id"]
            scored = other["profiles"]
            if (path.resolve() == folder.path("shared", control.id).resolve() or not finished(path) or not set(names) <= set(scored)
                    or (len(names) > 1) != (len(scored) > 1)):
                continue
            if control_key(RunConfig.from_file(path / "config.yaml")) == key:
                return path
    return None


def needed(cells: tuple[str, ...], folder: SweepFolder) -> bool:
    """A shared control is needed while one of its cells has not finished."""
    return not all(finished(folder.path("runs", c)) for c in cells)


def run_sweep(plan: Plan, folder: SweepFolder, executor: Executor, sink: Sink, records_back: bool = False, command: str = "") -> dict[str, Any]:
    """Run every unfinished task of ``plan``, at most what ``executor`` allows at once; a cell starts once its shared control
    has finished. Returns the counts and the failures; the report is written at the end, whatever finished."""
    from harness.sweep.report import write_report

    folder.folder.mkdir(parents=True, exist_ok=True)
    with folder.driving():
        check_cells(plan, folder)
        adopt_finished(plan, folder)
        write_atomic(folder.path("plan.json"), json.dumps(plan.describe(), indent=1))
        spec = plan.source.read_text(encoding="utf-8")
        write_atomic(folder.path("spec.yaml"), spec + (f"\n# command line: {command}\n" if command else ""))
        start, started = time.perf_counter(), now()
        session = {"started": started, "finished": None, "seconds": None, "executor": executor.description, "command": command}
        sessions = folder.sessions()
        all_tasks = tasks(plan, folder, records_back, command)
        cells_of = {s.id: s.cells for s in plan.controls}
        pending = [t for t in all_tasks if not finished(folder.path(t.folder)) and (t.kind != "control" or needed(cells_of[t.id], folder))]
        to_run = len(pending)
        folder.log(f"driver pid {os.getpid()} on {socket.gethostname()}: {executor.description}; {len(pending)} of {len(all_tasks)} tasks to run")
        sink({"type": "sweep", "total": len(all_tasks), "pending": len(pending), "executor": executor.description})
        failed: dict[str, str] = {}
        running: dict[str, Task] = {}

        def handle(event: dict) -> None:
            if event.get("type") == "task" and event.get("state") == "running":
                folder.set_status(event["task"], state="running", node=event["node"], host=event["host"], pid=event["pid"], started=now(), error=None)
                folder.log(f"start {event['task']} on node {event['node']} (host {event['host']}, pid {event['pid']})")
            elif event.get("type") in ("start", "step"):  # interactions done per arm: progress whatever the executor
                arms = {**folder.status(event["task"]).get("arms", {}), f"{event['arm']}-s{event['seed']}": event["done"]}
                folder.set_status(event["task"], arms=arms)
            sink(event)

        try:
            with sigterm_as_interrupt():  # a scheduler's stop, as Ctrl-C: the workers stop and the session is recorded
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
                            folder.set_status(task.id, state="queued", error=None, traceback=None)
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
    return {"tasks": len(all_tasks), "ran": to_run, "failed": failed, "seconds": session["seconds"], "report": report}


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


