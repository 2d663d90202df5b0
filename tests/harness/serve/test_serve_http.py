"""`hindsight serve` under raw HTTP (httpx, and sockets for what no client library sends): malformed JSON and numbers,
lone surrogates, bad bytes, oversize and chunked bodies, broken framing, wrong methods and paths. Every answer has the
right status and an OpenAI-shaped body, never a 500 or a traceback, and the server goes on answering afterwards."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from serve_helpers import LIMITS, assert_openai_error, serving

GOOD = {"model": "smollm2", "messages": [{"role": "user", "content": "Name one colour."}], "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def served(policy):
    yield from serving(policy)


def post(served, data: bytes, path: str = "/chat/completions", **headers: str) -> httpx.Response:
    return httpx.post(served.url + path, content=data, headers={"Content-Type": "application/json", **headers}, timeout=60)


def good(**fields) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


RAW = [  # (body bytes, param the error names, a phrase of its message)
    (b"{not json", None, "not valid JSON"),
    (b"", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b"\xff\xfe{}", None, "UTF-8"),
    (good().replace(b'"temperature": 0', b'"temperature": NaN'), None, "NaN"),
    (good().replace(b'"temperature": 0', b'"temperature": Infinity'), None, "Infinity"),
    (good().replace(b'"temperature": 0', b'"temperature": 1e999'), "temperature", "between"),
    (good().replace(b'"max_tokens": 2', b'"max_tokens": ' + b"9" * 5000), None, "not valid JSON"),
    (good().replace(b'"max_tokens": 2', b'"seed": 1180591620717411303424, "max_tokens": 2'), "seed", "between"),
    (good().replace(b"Name one colour.", b"\\ud800 lone"), "messages[0].content", "lone surrogate"),
    (good().replace(b'"smollm2"', b'"\\udfff"'), "model", "lone surrogate"),
    (b"[" * 20000 + b"]" * 20000, None, "nested too deeply"),
    (json.dumps({"messages": GOOD["messages"]}).encode(), "model", "model parameter"),
    (good(messages="hi"), "messages", "non-empty list"),
    (good(stream_options={"include_usage": True}), "stream_options", "only allowed"),
]


@pytest.mark.parametrize("data, param, phrase", RAW, ids=[f"raw{i}" for i in range(len(RAW))])
def test_malformed_bodies_are_400s_with_openai_errors(served, data, param, phrase):
    response = post(served, data)
    error = assert_openai_error(response.status_code, response.json(), 400, param=param)
    assert phrase in error["message"], error
    assert post(served, good()).status_code == 200  # and the server goes on


def test_oversize_bodies_are_413_whether_declared_or_chunked(served):
    big = good(messages=[{"role": "user", "content": "x" * (LIMITS.max_body + 10)}])
    response = post(served, big)
    assert_openai_error(response.status_code, response.json(), 413, code="request_too_large")

    def chunks():
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = httpx.post(served.url + "/chat/completions", content=chunks(), timeout=60)  # no Content-Length: chunked
    assert_openai_error(streamed.status_code, streamed.json(), 413)
    assert post(served, good()).status_code == 200


@pytest.mark.parametrize("method, path, status", [
    ("PUT", "/chat/completions", 405), ("GET", "/chat/completions", 405), ("DELETE", "/models", 405), ("PATCH", "/models/smollm2", 405),
    ("POST", "/completions", 404), ("GET", "/nope", 404), ("POST", "/models", 405),
])
def test_wrong_methods_and_paths_are_405_and_404(served, method, path, status):
    response = httpx.request(method, served.url + path, content=b"{}", timeout=30)
    assert_openai_error(response.status_code, response.json(), status)
    if status == 405:
        assert response.headers["allow"]


def test_head_gets_headers_only(served):
    assert httpx.head(served.url + "/models", timeout=30).status_code == 200
    head = httpx.head(served.url + "/chat/completions", timeout=30)
    assert head.status_code == 405 and head.content == b""


def raw_exchange(served, request: bytes, reads: int = 1) -> bytes:
    """Send ``request`` on a fresh socket and read until the server closes it or ``reads`` responses came."""
    host, port = served.address
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(request)
        data = b""
        while data.count(b"HTTP/1.1 ") < reads or not _complete(data, reads):
            part = sock.recv(65536)
            if not part:
                break
            data += part
        return data


def _complete(data: bytes, reads: int) -> bool:
    """Whether ``data`` holds ``reads`` whole responses (each with a Content-Length body)."""
    rest = data
    for _ in range(reads):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        if len(rest) < length:
            return False
        rest = rest[length:]
    return True


def responses(data: bytes) -> list[tuple[int, dict]]:
    out, rest = [], data
    while rest.startswith(b"HTTP/1.1 "):
        head, _, rest = rest.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        out.append((status, json.loads(rest[:length])))
        rest = rest[length:]
    return out


def request_bytes(body: bytes, *headers: str, method: str = "POST") -> bytes:
    lines = [f"{method} /v1/chat/completions HTTP/1.1", "Host: localhost", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_non_numeric_content_length_is_a_json_400_and_the_server_lives_on(served):
    [(status, body)] = responses(raw_exchange(served, request_bytes(good(), "Content-Length: abc")))
    assert_openai_error(status, body, 400, code="invalid_http")
    [(status, body)] = responses(raw_exchange(served, request_bytes(good(), "Content-Length: 12, 13")))
    assert_openai_error(status, body, 400)
    assert post(served, good()).status_code == 200


def test_a_chunked_body_keeps_the_connection_in_step(served):
    body = good()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 20]), body[i : i + 20]) for i in range(0, len(body), 20)) + b"0\r\n\r\n"
    plain = request_bytes(body, f"Content-Length: {len(body)}")
    data = raw_exchange(served, request_bytes(chunked, "Transfer-Encoding: chunked") + plain, reads=2)
    (first, a), (second, b) = responses(data)
    assert first == second == 200 and a["choices"][0]["message"] == b["choices"][0]["message"]


def test_broken_chunked_framing_is_a_json_400_and_no_traceback(served, capfd):
    """The framing breaks after the app started reading the body: the protocol answers, and the app's own answer is dropped."""
    [(status, body)] = responses(raw_exchange(served, request_bytes(b"zz\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: chunked")))
    assert_openai_error(status, body, 400, code="invalid_http")
    assert post(served, good()).status_code == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_body_shorter_than_declared_does_not_hang_the_server(served):
    host, port = served.address
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request_bytes(good()[:10], "Content-Length: 500"))
    assert post(served, good()).status_code == 200
