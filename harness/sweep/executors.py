"""Where a sweep's tasks run: ``local`` (a fresh process per task, as many at once as cores and memory allow) or ``ray`` (a
Ray task per task on an existing cluster, with declared CPUs, memory and a GPU when the policy runs on CUDA).

Both take tasks with ``submit`` and hand back results with ``poll``, passing the workers' progress events on.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queues
import socket
from pathlib import Path
from typing import Any, Protocol

from core.errors import UserInputError
from harness.sweep.worker import Sink, Task, TaskResult, local_main, ray_main

GB = 1024**3


class Executor(Protocol):
    description: str

    def can_start(self, task: Task) -> bool: ...

    def submit(self, task: Task) -> None: ...

    def poll(self, sink: Sink, timeout: float) -> list[TaskResult]: ...

    def close(self) -> None: ...


def available_memory() -> float | None:
    """Bytes of memory available for new processes (Linux: MemAvailable), None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_slots(threads: int, memory_per_arm: float, parallel: int | None, gpus: int = 0) -> tuple[int, str]:
    """How many arm processes run at once, and why: one per ``threads`` cores, as many as the available memory holds at
    ``memory_per_arm`` GB each, and with ``gpus`` (the policy on CUDA) one per GPU (``parallel`` overrides)."""
    n_cores, memory = cores(), available_memory()
    by_cores = max(1, n_cores // max(threads, 1))
    by_memory = max(1, int(memory // (memory_per_arm * GB))) if memory is not None else by_cores
    slots = parallel or min(by_cores, by_memory, gpus or by_cores)
    why = (f"{n_cores} cores at {threads} thread(s) per arm, " + (f"{memory / GB:.1f} GB available" if memory is not None else "memory unknown")
           + f" at ~{memory_per_arm:g} GB per arm process" + (f", {gpus} GPU(s): a task sees one (CUDA_VISIBLE_DEVICES)" if gpus else ""))
    return slots, (f"--parallel {parallel} ({why})" if parallel else why)


class LocalExecutor:
    """A fresh spawned process per task (its memory goes back when it ends); tasks start while the arm processes they
    train fit in ``slots``. A worker dies with the driver, so a killed driver leaves no orphan writing into a cell. With
    ``gpus``, each task sees one GPU, the one fewest running tasks use (its arms run on it one after another)."""

    def __init__(self, slots: int, why: str, gpus: int = 0):
        self.slots = slots
        self.gpus = gpus
        self.description = f"local: {slots} arm process(es) at once ({why})"
        self.context = multiprocessing.get_context("spawn")
        self.queue = self.context.Queue()
        self.running: dict[str, tuple[Any, int]] = {}
        self.devices: dict[str, int] = {}  # task → the GPU it sees

    def device(self) -> int | None:
        """The GPU for the next task: the one the fewest running tasks use (lowest index first); None without GPUs."""
        if not self.gpus:
            return None
        return min(range(self.gpus), key=lambda g: (sum(d == g for d in self.devices.values()), g))

    def can_start(self, task: Task) -> bool:
        used = sum(weight for _, weight in self.running.values())
        return not self.running or used + task.weight <= self.slots

    def submit(self, task: Task) -> None:
        device = self.device()
        process = self.context.Process(target=local_main, args=(task, self.queue, os.getpid(), device), name=f"hindsight-sweep-{task.id}")
        process.start()
        self.running[task.id] = (process, task.weight)
        if device is not None:
            self.devices[task.id] = device

    def poll(self, sink: Sink, timeout: float) -> list[TaskResult]:
        results = self._drain(sink, timeout)
        for task_id, (process, _) in list(self.running.items()):
            if not any(r.id == task_id for r in results) and not process.is_alive():
                results += self._drain(sink, 0.5)  # a result sent just before the process ended
                if not any(r.id == task_id for r in results):
                    code = process.exitcode
                    results.append(TaskResult(task_id, "failed", socket.gethostname(), 0.0,
                                              f"the worker process died (exit code {code}" + ("; killed: out of memory?)" if code == -9 else ")")))
        for result in results:
            process, _ = self.running.pop(result.id)
            self.devices.pop(result.id, None)
            process.join()
        return results

    def _drain(self, sink: Sink, timeout: float) -> list[TaskResult]:
        results = []
        try:
            message = self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait()
            while True:
                if message["type"] == "result":
                    results.append(message["result"])
                else:
                    sink(message)
                message = self.queue.get_nowait()
        except queues.Empty:
            pass
        return results

    def close(self) -> None:
        for process, _ in self.running.values():
            if process.is_alive():
                process.terminate()
        for process, _ in self.running.values():
            process.join(timeout=30)
        self.running.clear()
        self.devices.clear()


def reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse an address nothing listens at within ``timeout`` seconds (``ray.init`` would retry for minutes); ``auto`` and
    addresses without a port are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserInputError(f"--address {address}: nothing answers there ({exc.strerror or type(exc).__name__}); start a cluster with "
                             "`ray start --head` and pass the address it prints (host:6379)") from None


class RayExecutor:
    """Each task a Ray task on the cluster at ``address``, declaring its CPUs (threads × arms), memory (``memory_per_arm`` GB
    × arms) and one GPU when the policy runs on CUDA; Ray places and queues them. Events come back through a queue actor."""

    def __init__(self, address: str, memory_per_arm: float):
        try:
            import ray
            from ray.util.queue import Queue
        except ImportError:
            raise UserInputError("--executor ray needs Ray: pip install -e '.[ray]' (on the driver and every node)") from None
        self.ray = ray
        reachable(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserInputError(f"--address {address}: no Ray cluster there ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                                 "start one with `ray start --head` and pass its address") from None
        self.memory_per_arm = memory_per_arm
        self.events = Queue(actor_options={"num_cpus": 0})
        self.remote = ray.remote(max_calls=1)(ray_main)  # a fresh worker process per task: its memory goes back when it ends
        self.refs: dict[Any, Task] = {}
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        self.description = f"ray at {address}: {len(nodes)} node(s), {cpus:g} CPUs; a task declares threads × arms CPUs and ~{memory_per_arm:g} GB per arm"

    def resources(self, task: Task) -> dict[str, Any]:
        return {"num_cpus": (task.config.threads or 1) * task.weight, "memory": int(self.memory_per_arm * GB * task.weight),
                "num_gpus": 1 if task.config.policy.device == "cuda" else 0}

    def can_start(self, task: Task) -> bool:
        return True  # Ray queues what does not fit yet

    def submit(self, task: Task) -> None:
        ref = self.remote.options(**self.resources(task), max_retries=1, name=f"hindsight-{task.id}").remote(task, self.events)
        self.refs[ref] = task

    def poll(self, sink: Sink, timeout: float) -> list[TaskResult]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout) if self.refs else ([], [])
        while not self.events.empty():
            sink(self.events.get_nowait())
        results = []
        for ref in ready:
            task = self.refs.pop(ref)
            try:
                results.append(self.ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - a node or worker died: the task failed, the sweep goes on
                results.append(TaskResult(task.id, "failed", "?", 0.0, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        return results

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        self.refs.clear()
        self.ray.shutdown()
