"""An OpenAI-compatible chat endpoint over a local policy, so any OpenAI client (litellm included) can use it.

``POST /v1/chat/completions`` honours ``messages`` (rendered with the model's chat template), ``max_tokens``
(or ``max_completion_tokens``), ``temperature`` (0 = greedy), ``top_p``, ``seed`` and ``n`` = 1, and returns
``usage`` token counts. ``GET /v1/models`` lists the one model. Generation is serialised by a lock; other
request fields are ignored. Errors are JSON: 400 for a bad request, 404 for any other path.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from core.engine import HFEngine, SamplingParams
from core.errors import UserInputError
from core.policy import Message, Policy

DEFAULT_MAX_TOKENS = 256


class BadRequest(Exception):
    pass


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once, as the server will (address reuse on), so a port in use fails before the model loads."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserInputError(f"--host {host}: not an address ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserInputError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port (0 picks a free one)") from None


class PolicyServer(ThreadingHTTPServer):
    """Serves one policy; ``completions``, ``prompt_tokens`` and ``completion_tokens`` count what it generated."""

    daemon_threads = True

    def __init__(self, policy: Policy, model_name: str, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.policy = policy
        self.model_name = model_name
        self.verbose = verbose
        self.engine = HFEngine(policy, batch_size=1)
        self.lock = threading.Lock()
        self.completions = self.prompt_tokens = self.completion_tokens = 0
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def complete(self, body: Any) -> dict[str, Any]:
        """The chat.completion object for a request body (raises BadRequest with a message for the client)."""
        messages = _messages(body)
        max_tokens = next((body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None), DEFAULT_MAX_TOKENS)
        temperature, top_p, seed = body.get("temperature", 1.0), body.get("top_p", 1.0), body.get("seed")
        if not _integer(max_tokens) or max_tokens < 1:
            raise BadRequest("'max_tokens' must be a positive integer")
        if not _number(temperature) or temperature < 0:
            raise BadRequest("'temperature' must be a number >= 0")
        if not _number(top_p) or not 0 < top_p <= 1:
            raise BadRequest("'top_p' must be a number in (0, 1]")
        if seed is not None and not _integer(seed):
            raise BadRequest("'seed' must be an integer")
        if body.get("n", 1) != 1:
            raise BadRequest("only n=1 is supported")
        if body.get("stream"):
            raise BadRequest("streaming is not supported; send stream=false")
        context = self.policy.encode_chat(messages)
        params = SamplingParams(max_new_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p))
        with self.lock:
            if seed is not None:
                torch.manual_seed(seed)
            generation = self.engine.generate([context], params)[0]
            self.completions += 1
            self.prompt_tokens += len(context)
            self.completion_tokens += len(generation.token_ids)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": generation.text},
                         "finish_reason": "stop" if generation.finished else "length"}],
            "usage": {"prompt_tokens": len(context), "completion_tokens": len(generation.token_ids),
                      "total_tokens": len(context) + len(generation.token_ids)},
        }


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _messages(body: Any) -> list[Message]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise BadRequest(f"messages[{i}] needs a 'role' (system, user or assistant) and a string 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


class _Handler(BaseHTTPRequestHandler):
    server: PolicyServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "hindsight"}]})
        else:
            self._not_found()

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._not_found()
            return
        try:
            try:
                body = json.loads(raw)
            except ValueError:
                raise BadRequest("the request body is not valid JSON") from None
            self._send(200, self.server.complete(body))
        except BadRequest as exc:
            self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
        except Exception as exc:  # a failure inside generation: tell the client instead of dropping the connection
            self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}})

    def _not_found(self) -> None:
        self._send(404, {"error": {"message": f"no route {self.command} {self.path}; use POST /v1/chat/completions or GET /v1/models",
                                   "type": "not_found"}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server API)
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def load_server(model: str, host: str = "127.0.0.1", port: int = 0, device: str = "auto", threads: int | None = None, verbose: bool = True) -> PolicyServer:
    """Check the port, load ``model`` for inference and bind a PolicyServer to it (named after the model's file or folder)."""
    from pathlib import Path

    from core.policy import PolicySettings
    from core.runtime import quiet_libraries, set_threads

    check_port(host, port)  # a port in use fails now, not after the model loads
    quiet_libraries()
    set_threads(threads)
    policy = Policy.load(PolicySettings(model=model, device=device))  # type: ignore[arg-type]
    policy.model.eval().requires_grad_(False)
    name = Path(model).stem if model.endswith(".gguf") else Path(model).name
    return PolicyServer(policy, model_name=name, host=host, port=port, verbose=verbose)
