"""Dynamic batching: requests that arrive together decode as one batch, on one model thread.

The ``Batcher`` owns the model: one worker thread takes the first waiting request, gathers those arriving within
``window`` seconds (up to ``max_batch``), and decodes them together through ``HFEngine``'s step-wise hook, which sees
each new token of each row. That hook streams text, applies each request's own ``max_tokens`` and stop strings, and
ends a row whose client went away (its ``cancelled`` flag), so a disconnected client stops costing decode steps at
the next step. Rows of different users share a batch with their own LoRA adapters (peft's mixed-adapter batches).
Greedy requests batch together; sampled ones batch by (temperature, top_p), and a sampled request with a ``seed``
decodes alone, after ``torch.manual_seed(seed)``, so that it is reproducible.

Between batches the worker runs work queued with ``call`` (admin actions) and one step of ``background`` (the
learner's training), so training never runs beside generation on the same weights.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from core.engine import HFEngine, SamplingParams

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass
class Done:
    """How a request ended: its text (stop string cut, whitespace stripped), why, and its token count."""

    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    tokens: list[int]


@dataclass
class Job:
    """One request's decode: its rendered context and settings; ``emit`` receives ``("delta", str)``, then
    ``("done", Done)`` or ``("error", str)``, from the worker thread."""

    context: list[int]
    max_tokens: int
    emit: Callable[[tuple[str, Any]], None]
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    adapter: str = BASE
    stream: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    cut: str | None = None  # the text up to a stop string, once one appeared

    def key(self) -> tuple:
        if self.temperature <= 0 or self.top_p <= 0:
            return ("greedy",)
        return ("seeded", id(self)) if self.seed is not None else ("sampled", self.temperature, self.top_p)


class Batcher:
    """The model thread: batches of requests, queued calls, and a background step between batches."""

    def __init__(self, engine: HFEngine, window: float = 0.02, max_batch: int = 16, max_queue: int = 256,
                 background: Callable[[], object] | None = None):
        self.engine = engine
        self.policy = engine.policy
        self.window, self.max_batch, self.max_queue = window, max_batch, max_queue
        self.background = background
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.calls: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="hindsight-model", daemon=True)
        self.batches: list[int] = []  # size of every decoded batch (tests and the load test read it)
        self.cancelled_rows = 0  # requests whose client went away before they finished
        self.decoded = 0  # tokens decoded, all requests together

    def start(self) -> Batcher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def pending(self) -> int:
        return self.jobs.qsize()

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False when the queue is full (the caller answers 503)."""
        if self.jobs.qsize() >= self.max_queue:
            return False
        self.jobs.put(job)
        return True

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the model thread between batches; its result (or exception) comes back through the future."""
        future: Future = Future()
        self.calls.put((fn, future))
        return future

    # ----- the worker ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self.stopping.is_set():
            self._run_calls()
            try:
                first = self.jobs.get(timeout=0.05)
            except queue.Empty:
                self._background()
                continue
            batch, deadline = [first], time.monotonic() + self.window
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    batch.append(self.jobs.get(timeout=left) if left > 0 else self.jobs.get_nowait())
                except queue.Empty:
                    break
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                if job.cancelled.is_set():
                    self.cancelled_rows += 1
                else:
                    groups.setdefault(job.key(), []).append(job)
            for group in groups.values():
                self._decode(group)
            self._background()

    def _run_calls(self) -> None:
        while True:
            try:
                fn, future = self.calls.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)

    def _background(self) -> None:
        self._run_calls()
        if self.background is not None:
            self.background()

    def _decode(self, group: list[Job]) -> None:
        first = group[0]
        params = SamplingParams(max_new_tokens=max(j.max_tokens for j in group), temperature=first.temperature, top_p=first.top_p)
        adapters = [j.adapter for j in group]
        if first.seed is not None and not (first.temperature <= 0 or first.top_p <= 0):
            torch.manual_seed(first.seed)
        try:
            self.engine.generate([j.context for j in group], params, on_token=lambda i, token: self._token(group[i], token),
                                 adapters=adapters if any(a != BASE for a in adapters) else None)
        except Exception as exc:  # a failure inside generation: each client hears of it, the server goes on
            for job in group:
                job.emit(("error", f"generation failed: {type(exc).__name__}: {exc}"))
            return
        self.batches.append(len(group))
        for job in group:
            if job.cancelled.is_set():
                self.cancelled_rows += 1
                continue
            self._finish(job)

    def _token(self, job: Job, token: int) -> bool:
        """The step-wise hook for one row: False ends it (cancelled, its own max_tokens, or a stop string)."""
        if job.cancelled.is_set():
            return False
        self.decoded += 1
        job.tokens.append(token)
        if token == self.policy.eos_token_id:
            return True  # the engine ends the row
        if job.stops or job.stream:
            text = self.policy.tokenizer.decode(job.tokens, skip_special_tokens=True)
            hits = [text.find(s) for s in job.stops if s in text]
            if hits:
                job.cut = text[: min(hits)]
                return False
            if job.stream:
                self._stream(job, text)
        return len(job.tokens) < job.max_tokens

    def _stream(self, job: Job, text: str) -> None:
        """Send the part of the text that can no longer change: the final text is stripped, a stop string may still
        complete, and a multi-byte character may still be half-decoded."""
        hold = max((len(s) - 1 for s in job.stops), default=0)
        safe = text.lstrip()
        safe = safe[: len(safe) - hold] if hold else safe
        safe = safe.rstrip().removesuffix("\ufffd").rstrip()
        if len(safe) > len(job.sent) and safe.startswith(job.sent):
            job.emit(("delta", safe[len(job.sent):]))
            job.sent = safe

    def _finish(self, job: Job) -> None:
        eos = bool(job.tokens) and job.tokens[-1] == self.policy.eos_token_id
        if job.cut is not None:
            text = job.cut.strip()
        else:
            text = self.policy.decode(job.tokens)
        if job.stream and len(text) > len(job.sent) and text.startswith(job.sent):
            job.emit(("delta", text[len(job.sent):]))
            job.sent = text
        job.emit(("done", Done(text=text, finish_reason="stop" if eos or job.cut is not None else "length", tokens=list(job.tokens))))
