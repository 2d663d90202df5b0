"""Running the app: uvicorn on a thread (tests, the load test, `hindsight chat`), or in the foreground (`hindsight serve`).

uvicorn's HTTP/1.1 parser (h11) answers a request it cannot parse (``Content-Length: abc``, a broken chunked body,
oversized headers) itself; ``OpenAIH11Protocol`` makes that answer an OpenAI-shaped JSON 400 like every other error.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.errors import UserInputError
from core.policy import Policy, PolicySettings
from core.runtime import sigterm_as_interrupt
from harness.serve.app import build_app
from harness.serve.batching import Batcher
from harness.serve.protocol import error_body
from harness.serve.service import Limits, Service


class OpenAIH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose parse-error answer is ``{"error": {...}}`` JSON (still a 400 that closes the connection)."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(error_body("Invalid HTTP request received: the request line, headers or body framing could not be parsed",
                                     code="invalid_http")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
        if self.cycle is not None and not self.cycle.response_complete:  # the app already reading this request: its body ends here,
            self.cycle.disconnected = True  # and what it answers goes nowhere (not into a connection that has answered)
            self.cycle.message_event.set()


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


def model_name(model: str) -> str:
    """The name clients send as ``model``: the model's file or folder name (the alias for an embedded model)."""
    return Path(model).stem if model.endswith(".gguf") else Path(model).name


def load_policy(model: str, device: str = "auto", threads: int | None = None, lora: bool = False) -> Policy:
    """``model`` loaded for serving (with a LoRA adapter slot when ``lora``; users' adapters are added beside it)."""
    from core.policy import LoraSettings
    from core.runtime import quiet_libraries, set_threads

    quiet_libraries()
    set_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation notices raised inside peft
        policy = Policy.load(PolicySettings(model=model, device=device, lora=LoraSettings() if lora else None))  # type: ignore[arg-type]
    policy.model.eval()
    if not lora:
        policy.model.requires_grad_(False)
    return policy


def make_service(policy: Policy, name: str, limits: Limits | None = None, window: float = 0.02, max_batch: int = 16, **extra) -> Service:
    """A Service over ``policy`` with its model thread started (``extra``: keys, learner)."""
    from core.engine import HFEngine

    learner = extra.get("learner")
    batcher = Batcher(HFEngine(policy, batch_size=max_batch, impl="fast"), window=window, max_batch=max_batch,
                      background=learner.step if learner is not None else None).start()
    return Service(policy=policy, batcher=batcher, model_name=name, limits=limits or Limits(), **extra)


class ServerThread:
    """uvicorn serving ``service`` on a background thread; ``url`` is the OpenAI base URL (…/v1)."""

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", access_log: bool = False):
        import uvicorn

        self.service = service
        config = uvicorn.Config(build_app(service), host=host, port=port, http=OpenAIH11Protocol, log_level=log_level, access_log=access_log,
                                lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="hindsight-http", daemon=True)

    def start(self, timeout: float = 30) -> ServerThread:
        if self.thread.is_alive():
            return self
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        return self

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.service.batcher.stop()
        if self.service.learner is not None:
            self.service.learner.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> None:
        """Serve until Ctrl-C or SIGTERM (the foreground `hindsight serve`)."""
        try:
            with sigterm_as_interrupt():
                while self.thread.is_alive():
                    self.thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


def start_server(*, model: str, host: str = "127.0.0.1", port: int = 0, device: str = "auto", threads: int | None = None, max_tokens: int = 2048,
                 default_tokens: int = 256, max_body: int = 1 << 20, batch: int = 16, window: float = 0.02, rate_limit: float | None = None,
                 keys: Path | None = None, learn: bool = False, state: Path = Path("serve-state"), learn_batch: int = 4,
                 learn_idle: float = 5.0, lr: float = 2e-4, guard: str = "skip_flagged") -> ServerThread:
    """Check every option, then the port, then load the model and start serving (`hindsight serve`)."""
    from typing import get_args

    from harness.serve.keys import load_keys
    from harness.serve.learn import Learner, LearnSettings, summary_line
    from trainers.guard import GuardMode

    if guard not in get_args(GuardMode):
        raise UserInputError(f"--guard {guard}: one of {', '.join(get_args(GuardMode))}")
    if learn and keys is None:
        raise UserInputError("--learn needs --keys FILE: each API key names the one user whose adapter it trains (see `hindsight serve --help`)")
    if rate_limit is not None and keys is None:
        raise UserInputError("--rate-limit is per user: it needs --keys FILE")
    if default_tokens > max_tokens:
        raise UserInputError(f"--default-tokens {default_tokens} is above --max-tokens {max_tokens}")
    loaded_keys = load_keys(keys) if keys is not None else None
    settings = LearnSettings(state=state, batch=learn_batch, idle=learn_idle, lr=lr, guard=guard) if learn else None  # type: ignore[arg-type]
    check_port(host, port)  # a port in use fails now, not after the model loads
    policy = load_policy(model, device, threads, lora=learn)
    learner = Learner(policy, settings, on_update=lambda stats: print(summary_line(stats), file=sys.stderr, flush=True)) if settings is not None else None
    if learner is not None and learner.users():
        pending = sum(learner.stats(u)["pending"] for u in learner.users())
        print(f"restored {len(learner.states)} users' adapters from {state} ({pending} journaled interactions still to apply)", file=sys.stderr, flush=True)
    limits = Limits(default_tokens=default_tokens, max_tokens=max_tokens, max_body=max_body, rate_per_minute=rate_limit)
    service = make_service(policy, model_name(model), limits, window=window, max_batch=batch, keys=loaded_keys, learner=learner)
    return ServerThread(service, host=host, port=port).start()
