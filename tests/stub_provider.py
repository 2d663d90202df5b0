"""An OpenAI-compatible chat endpoint on 127.0.0.1 standing in for a paid provider (the one thing tests cannot call).

It can also misbehave on purpose: ``faults`` is a queue of what to do with the next requests, one entry each —
``None`` (answer normally), an HTTP status (``500``, ``429``, ``401``, …), ``(429, seconds)`` (a 429 with
``Retry-After``), ``"hang"`` (send nothing until the stub closes), ``"garbage"`` (a 200 whose body is not JSON) or
``"empty"`` (a 200 with no choices). Each fault served is counted in ``injected``.

``delay`` (seconds) is how long every request takes before its answer (as a slow provider would; requests are served
concurrently, one thread each); ``peak`` records the most requests ever in flight at once. ``fault_for(body)`` picks a
fault by the request's content once the queue is empty (the queue's order is arrival order, which concurrency shuffles).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# request body -> (reply text, prompt tokens, completion tokens)
Reply = Callable[[dict], tuple[str, int, int]]
Fault = int | tuple[int, float] | str | None


class StubProvider:
    """Serves ``POST .../chat/completions`` with ``reply(body)``; appends each request (path, auth header, body) to ``requests``."""

    def __init__(self, reply: Reply, requests: list[dict] | None = None, faults: Iterable[Fault] = (), delay: float = 0.0,
                 fault_for: Callable[[dict], Fault] | None = None):
        self.requests = requests if requests is not None else []
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        self.faults: deque[Fault] = deque(faults)
        self.injected: Counter[str] = Counter()
        self.release = threading.Event()  # set on exit: lets hanging responses go
        lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    stub.in_flight += 1
                    stub.peak = max(stub.peak, stub.in_flight)
                try:
                    if stub.delay:
                        time.sleep(stub.delay)
                    self._answer(body)
                finally:
                    with lock:
                        stub.in_flight -= 1

            def _answer(self, body: dict) -> None:
                with lock:
                    stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    fault = stub.faults.popleft() if stub.faults else (fault_for(body) if fault_for else None)
                    if fault is not None:
                        stub.injected[str(fault[0] if isinstance(fault, tuple) else fault)] += 1
                if fault == "hang":
                    stub.release.wait(60)
                    return
                if isinstance(fault, int | tuple):
                    status, retry_after = fault if isinstance(fault, tuple) else (fault, None)
                    auth = self.headers.get("Authorization") or "no key"  # real providers echo (part of) a bad key
                    error = {"error": {"message": f"injected {status} ({auth})", "type": "stub", "code": status}}
                    self._send(status, json.dumps(error).encode(), {"Retry-After": str(retry_after)} if retry_after is not None else {})
                    return
                text, prompt_tokens, completion_tokens = reply(body)
                choices = [] if fault == "empty" else [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]
                data = json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices,
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
                }).encode()
                self._send(200, b"<html>502 Bad Gateway</html>" if fault == "garbage" else data)

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # many concurrent clients connect at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> StubProvider:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
