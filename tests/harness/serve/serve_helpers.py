"""What the serve tests share: the served SmolLM2 (the session's policy behind a real uvicorn on 127.0.0.1, a free port),
its limits, and the check of an OpenAI-shaped error. Each test module's ``served`` fixture yields from ``serving``."""

from __future__ import annotations

from collections.abc import Iterator

from harness.serve import serve_policy
from harness.serve.server import ServerThread
from harness.serve.service import Limits

LIMITS = Limits(default_tokens=16, max_tokens=256, max_body=64 * 1024)


def assert_openai_error(status: int, body: dict, expected: int, param: str | None = "*", code: str | None = "*") -> dict:
    """``body`` is an OpenAI error object with exactly the four fields; ``param``/``code`` checked unless "*"."""
    assert status == expected, (status, body)
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["type"], body
    assert "Traceback" not in error["message"]
    if param != "*":
        assert error["param"] == param, body
    if code != "*":
        assert error["code"] == code, body
    return error


def serving(policy) -> Iterator[ServerThread]:
    """The body of a module's ``served`` fixture: a batch window of 0.3 s, so requests sent together share a batch however
    busy the machine is."""
    server = serve_policy(policy, "smollm2", limits=LIMITS, window=0.3)
    yield server
    server.stop()
