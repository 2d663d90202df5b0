"""What a worker does with one task of a sweep, wherever it runs (a local process or a Ray task): run a cell, or a shared
control arm, into its run folder with the ordinary loop (``harness.loop.personalize``) and say how it went.

A task's folder is in the driver's sweep folder when the worker sees it (the sweep's token file reads the same there);
otherwise, or with ``records_back``, in a scratch folder of the worker's own (``$TMPDIR/hindsight-sweeps/TOKEN/``), and
the result carries the run's records (its JSONL, JSON, YAML, markdown and PNG files; checkpoints stay with the worker).
A lock per task keeps two processes out of one folder (a worker left over from a killed driver is waited for).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.records import METRIC, EvalRecord, InteractionRecord, RunInfo, SampleRecord, read_jsonl
from core.runtime import die_with_parent
from harness.checkpoint import ArmCheckpoints, ArmState, write_atomic
from harness.config import RunConfig
from harness.schedule import Schedule

Sink = Callable[[dict], None]
LOGS = (("interactions.jsonl", InteractionRecord), ("metrics.jsonl", METRIC), ("samples.jsonl", SampleRecord))


@dataclass(frozen=True)
class Task:
    """One unit of work: a cell (an ordinary run) or a shared control (the control arm of several cells)."""

    id: str
    kind: Literal["cell", "control"]
    folder: str  # relative to the sweep folder: runs/ID or shared/ID
    config: RunConfig
    schedule: Schedule
    root: str  # the driver's sweep folder
    token: str  # the sweep's token, also in ROOT/.token: a worker that reads it there shares the driver's filesystem
    weight: int  # arm processes it trains at once
    control: str | None = None  # a cell's shared control
    install: dict[str, Any] | None = None  # a cell's control-arm records, taken from its shared control
    records_back: bool = False
    command: str = ""


@dataclass(frozen=True)
class TaskResult:
    id: str
    state: Literal["done", "failed"]
    node: str
    seconds: float
    error: str | None = None
    trace: str | None = None  # the failure's traceback, for status/ID.json
    files: dict[str, bytes] | None = None  # the run's records, when the worker wrote them in a folder of its own


def run_task(task: Task, sink: Sink, node: str) -> TaskResult:
    """Run ``task`` (skipping it when its folder holds a finished run); every event goes to ``sink`` tagged with the task id.
    A failure is returned, not raised, so that the other tasks go on."""
    start = time.perf_counter()
    base = Path(task.root) if not task.records_back and shares_filesystem(task) else scratch(task.token)
    folder = base / task.folder

    def tagged(event: dict) -> None:
        sink({**event, "task": task.id})

    tagged({"type": "task", "state": "running", "node": node, "pid": os.getpid(), "host": socket.gethostname(), "folder": str(folder)})
    error = trace = None
    try:
        with task_lock(base / "locks" / f"{task.id}.lock", tagged):
            if not finished(folder):
                _run(task, folder, tagged)
    except Exception as exc:  # noqa: BLE001 - recorded with the task, the sweep goes on
        error, trace = f"{type(exc).__name__}: {exc}", traceback.format_exc()
    files = None if base == Path(task.root) else collect(folder)
    return TaskResult(task.id, "failed" if error else "done", node, round(time.perf_counter() - start, 1), error, trace, files)


def _run(task: Task, folder: Path, sink: Sink) -> None:
    from harness.loop import personalize

    resume = (folder / "config.yaml").is_file()  # a task that stopped (killed, failed) continues from its checkpoints
    if task.kind == "control":
        personalize(task.config, folder, sink, command=task.command, resume=resume, schedule=task.schedule, arms=("control",))
        return
    if task.install is not None:
        install_control(folder, task.install)
    personalize(task.config, folder, sink, command=task.command, resume=resume, schedule=task.schedule)


def finished(folder: Path) -> bool:
    path = folder / "run.json"
    return path.is_file() and RunInfo.model_validate_json(path.read_text(encoding="utf-8")).status == "finished"


def shares_filesystem(task: Task) -> bool:
    try:
        return (Path(task.root) / ".token").read_text(encoding="utf-8").strip() == task.token
    except OSError:
        return False


def scratch(token: str) -> Path:
    return Path(tempfile.gettempdir()) / "hindsight-sweeps" / token


@contextlib.contextmanager
def task_lock(path: Path, sink: Sink) -> Iterator[None]:
    """Hold ``path``'s exclusive lock while the task runs; the kernel drops it when the process dies, however it dies."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sink({"type": "phase", "text": f"waiting for an earlier process that still runs {path.stem} (a driver killed before?)"})
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def locked(path: Path) -> bool:
    """Whether some process holds ``path``'s lock now."""
    import fcntl

    if not path.is_file():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def collect(folder: Path) -> dict[str, bytes]:
    """The run's records and report (top-level files) and its arms' committed-state pointers; no weights."""
    if not folder.is_dir():
        return {}
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.endswith(".tmp")}
    for path in [*(folder / "state").glob("*/latest.json"), folder / "state" / "untrained.json"]:
        if path.is_file():
            files[str(path.relative_to(folder))] = path.read_bytes()
    return files


def control_records(folder: Path, seed: int, label: str | None) -> dict[str, Any]:
    """From a finished shared control's folder: the control arm's records scored for one profile (``label``), written as a
    run of that profile alone would write them, and its committed state."""
    logs: dict[str, list[str]] = {}
    for name, model in LOGS:
        lines = []
        for record in read_jsonl(folder / name, model):
            if record.arm != "control":
                continue
            if isinstance(record, EvalRecord | SampleRecord):
                if record.profile != label:
                    continue
                record = record.model_copy(update={"profile": None})
            lines.append(record.model_dump_json())
        logs[name] = lines
    state = ArmCheckpoints.of(folder, "control", seed).latest()
    if state is None or not state.finished:
        raise RuntimeError(f"{folder}: the shared control has not finished")
    return {"seed": seed, "state": state.model_dump_json(), "logs": logs}


def install_control(folder: Path, install: dict[str, Any]) -> None:
    """Put a shared control's records into a cell's logs and mark its control arm finished (once: a rerun finds it done).
    Control lines a kill left half-installed are replaced; the marker is written last."""
    checkpoints = ArmCheckpoints.of(folder, "control", install["seed"])
    state = checkpoints.latest()
    if state is not None and state.finished:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in install["logs"].items():
        path = folder / name
        old = path.read_text(encoding="utf-8").split("\n") if path.is_file() else []
        kept = [line for line in old if line.strip() and _arm(line) not in ("control", None)]
        write_atomic(path, "".join(line + "\n" for line in [*kept, *lines]))
    checkpoints.finish(ArmState.model_validate_json(install["state"]))


def _arm(line: str) -> str | None:
    """A log line's arm; None for a line torn by a kill (dropped, as a resume would)."""
    try:
        return json.loads(line).get("arm")
    except json.JSONDecodeError:
        return None


def local_main(task: Task, queue: Any, parent: int, device: int | None = None) -> None:
    """The entry point of a local worker process: die with the driver, see only GPU ``device`` (when given), run the task,
    send the result."""
    die_with_parent(parent)  # no orphan keeps writing into a cell
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)  # before CUDA starts in this process: cuda:0 is that GPU
    result = run_task(task, queue.put, node=socket.gethostname())
    queue.put({"type": "result", "task": task.id, "result": result})


def ray_main(task: Task, queue: Any) -> TaskResult:
    """The body of a Ray task: the node id names where it ran; events go through the driver's queue actor."""
    import ray

    return run_task(task, queue.put, node=ray.get_runtime_context().get_node_id())
