"""The OpenAI chat-completions wire format: request validation, error bodies and response objects.

Every invalid field is an ``APIError`` (400, ``invalid_request_error``, ``param`` naming the field), never a crash:
strict JSON (no NaN or Infinity, valid UTF-8, no lone surrogates, bounded depth), numbers in range (``seed`` in int64,
``temperature`` in [0, 2], ``top_p`` in [0, 1]), and fields this server cannot honour (``n`` > 1, tools, logprobs,
non-text content, penalties) refused with a message rather than ignored.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from core.policy import Message

INT64 = 2**63
MAX_STOPS = 4
# accepted and ignored: they change nothing in what this server computes
IGNORED = {"store", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier", "modalities"}
KNOWN = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream", "stream_options", "seed", "stop",
         "user", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice", "functions",
         "function_call", "response_format", "reasoning_effort", *IGNORED}


class APIError(Exception):
    """An error the client gets as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(param: str | None, message: str, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


@dataclass
class ChatRequest:
    """A validated chat-completions request (``max_tokens`` None: the server's default, capped by the context left)."""

    model: str
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stream: bool = False
    include_usage: bool = False
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    user: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0 or self.top_p <= 0


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """The request body as JSON: UTF-8, no NaN/Infinity, no lone surrogates; an APIError(400) otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(None, f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise invalid(None, "the request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers with too many digits
        raise invalid(None, f"the request body is not valid JSON: {str(exc)[:200]}") from None


def _text(value: Any, param: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise invalid(param, f"'{param}' must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(param, f"'{param}' holds a lone surrogate (invalid Unicode); send valid UTF-8 text") from None
    if not allow_empty and not value:
        raise invalid(param, f"'{param}' must not be empty")
    return value


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(name, f"'{name}' must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not low <= value <= high:
        raise invalid(name, f"'{name}' must be a number between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"'{name}' must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        shown = str(value) if len(str(value)) <= 30 else f"a {len(str(value))}-digit number"
        raise invalid(name, f"'{name}' must be an integer between {low} and {high}, got {shown}")
    return value


def _content(value: Any, param: str) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    if isinstance(value, str):
        return _text(value, param)
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            where = f"{param}[{j}]"
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(where, f"'{where}': only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported, got {kind!r}")
            parts.append(_text(part.get("text"), f"{where}.text"))
        return "\n".join(parts)
    raise invalid(param, f"'{param}' must be a string or a list of text parts, got {type(value).__name__}")


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise invalid("messages", "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise invalid(where, f"'{where}' must be an object with 'role' and 'content'")
        role = m.get("role")
        if role in ("tool", "function"):
            raise invalid(f"{where}.role", f"'{where}.role': tool messages are not supported (this server has no tools)")
        if role not in ("system", "developer", "user", "assistant"):
            raise invalid(f"{where}.role", f"'{where}.role' must be 'system', 'developer', 'user' or 'assistant', got {str(role)[:40]!r}")
        if m.get("tool_calls"):
            raise invalid(f"{where}.tool_calls", f"'{where}.tool_calls': tools are not supported")
        if "name" in m and m["name"] is not None:
            _text(m["name"], f"{where}.name")
        out.append({"role": "system" if role == "developer" else role, "content": _content(m.get("content"), f"{where}.content")})
    return out


def _unsupported(body: dict) -> None:
    """Fields this server cannot honour: refused unless they ask for nothing."""
    for name in ("frequency_penalty", "presence_penalty"):
        value = _number(body, name, 0.0, -2.0, 2.0)
        if value != 0:
            raise invalid(name, f"'{name}' is not supported by this server (only 0)")
    for name in ("tools", "functions", "logit_bias"):
        if body.get(name):
            raise invalid(name, f"'{name}' is not supported by this server")
    for name in ("tool_choice", "function_call"):
        if body.get(name) not in (None, "none"):
            raise invalid(name, f"'{name}' is not supported by this server (no tools)")
    if body.get("logprobs") not in (None, False):
        raise invalid("logprobs", "'logprobs' is not supported by this server")
    if body.get("top_logprobs") is not None:
        raise invalid("top_logprobs", "'top_logprobs' is not supported by this server")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise invalid("response_format", "'response_format' must be {\"type\": \"text\"}: structured outputs are not supported")
    if body.get("reasoning_effort") is not None:
        raise invalid("reasoning_effort", "'reasoning_effort' is not supported (not a reasoning model)")


def parse_chat(body: Any) -> ChatRequest:
    """Validate a chat-completions body (already parsed JSON)."""
    if not isinstance(body, dict):
        raise invalid(None, "the request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise invalid(unknown[0], f"Unrecognized request argument supplied: {str(unknown[0])[:60]}")
    if body.get("model") is None:
        raise invalid("model", "you must provide a model parameter")
    model = _text(body["model"], "model", allow_empty=False)
    messages = _messages(body.get("messages"))
    _unsupported(body)
    given = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    max_tokens = _integer(body[given[0]], given[0], 1, INT64 - 1) if given else None
    n = body.get("n")
    if n is not None and _integer(n, "n", 1, 128) != 1:
        raise invalid("n", "only n=1 is supported")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", f"'stream' must be a boolean, got {type(stream).__name__}")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise invalid("stream_options", "'stream_options' is only allowed when 'stream' is true")
        if not isinstance(options, dict) or set(options) - {"include_usage"} or not isinstance(options.get("include_usage", False), bool):
            raise invalid("stream_options", "'stream_options' must be {\"include_usage\": true|false}")
        include_usage = bool(options.get("include_usage"))
    seed = body.get("seed")
    if seed is not None:
        seed = _integer(seed, "seed", -INT64, INT64 - 1)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS:
        raise invalid("stop", f"'stop' must be a string or a list of at most {MAX_STOPS} strings")
    stops = [_text(s, f"stop[{i}]", allow_empty=False) for i, s in enumerate(stops)]
    user = body.get("user")
    if user is not None:
        user = _text(user, "user")
    return ChatRequest(model=model, messages=messages, max_tokens=max_tokens, temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                       top_p=_number(body, "top_p", 1.0, 0.0, 1.0), stream=bool(stream), include_usage=include_usage, seed=seed,
                       stop=stops, user=user)


# ----- responses -------------------------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(cid: str, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None}, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def chunk(cid: str, model: str, created: int, delta: dict[str, Any] | None, finish_reason: str | None = None,
          usage_tokens: tuple[int, int] | None = None) -> dict[str, Any]:
    """A chat.completion.chunk: one delta (or, with ``usage_tokens`` and no delta, the final usage chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": None,
                           "choices": choices}
    if usage_tokens is not None:
        out["usage"] = usage(*usage_tokens)
    return out


def model_object(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "hindsight"}
