"""The error matrix of `hindsight serve`, as a table: each bad input, the status and error body it gets.

    .venv/bin/python bench/serve_errors.py [--model smollm2-135m]

Serves the model in-process on 127.0.0.1 (keys and a rate limit on) and sends every case the tests send
(tests/harness/serve/): through the official `openai` client where it can send the case, raw HTTP (httpx) or a raw
socket where it cannot. Prints a markdown table (case, status, type, param, code) and fails if any answer is a 500,
lacks an OpenAI-shaped body, or carries a traceback.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.serve.keys import Keys  # noqa: E402
from harness.serve.server import ServerThread, load_policy, make_service  # noqa: E402
from harness.serve.service import Limits  # noqa: E402

KEY, OTHER, ADMIN = "user-key-0123456789abcdef", "other-key-0123456789abcdef", "admin-key-0123456789abcdef"
ASK = [{"role": "user", "content": "Name one colour."}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    policy = load_policy(args.model, "cpu", 1)
    service = make_service(policy, "smollm2", Limits(default_tokens=4, max_tokens=256, max_body=64 * 1024, rate_per_minute=60),
                           keys=Keys.of({KEY: "alice", OTHER: "bob"}, [ADMIN]))
    rows, bad = [], []
    with ServerThread(service) as server:
        url, auth = server.url, {"Authorization": f"Bearer {KEY}"}

        def body(**fields) -> bytes:
            return json.dumps({"model": "smollm2", "messages": ASK, "max_tokens": 2, **fields}).encode()

        http_cases = [
            ("seed = 2**70", "POST", "/chat/completions", body(seed=2**70), auth),
            ("temperature: NaN (JSON literal)", "POST", "/chat/completions", body().replace(b'"max_tokens": 2', b'"temperature": NaN, "max_tokens": 2'), auth),
            ("temperature: 1e999", "POST", "/chat/completions", body().replace(b'"max_tokens": 2', b'"temperature": 1e999, "max_tokens": 2'), auth),
            ("temperature 2.5", "POST", "/chat/completions", body(temperature=2.5), auth),
            ("top_p 1.5", "POST", "/chat/completions", body(top_p=1.5), auth),
            ("lone surrogate in content", "POST", "/chat/completions", body().replace(b"Name one", b"\\ud800 Name one"), auth),
            ("invalid UTF-8 bytes", "POST", "/chat/completions", b"\xff\xfe{}", auth),
            ("not JSON", "POST", "/chat/completions", b"{not json", auth),
            ("5000-digit integer", "POST", "/chat/completions", body().replace(b'"max_tokens": 2', b'"max_tokens": ' + b"9" * 5000), auth),
            ("nesting 20000 deep", "POST", "/chat/completions", b"[" * 20000 + b"]" * 20000, auth),
            ("max_tokens 0", "POST", "/chat/completions", body(max_tokens=0), auth),
            ("max_tokens 2.5", "POST", "/chat/completions", body(max_tokens=2.5), auth),
            ("max_tokens over the server's cap", "POST", "/chat/completions", body(max_tokens=257), auth),
            ("max_tokens past the context left", "POST", "/chat/completions",
             body(messages=[{"role": "user", "content": "word " * 8100}], max_tokens=200), auth),
            ("n = 2", "POST", "/chat/completions", body(n=2), auth),
            ("role 'robot'", "POST", "/chat/completions", body(messages=[{"role": "robot", "content": "hi"}]), auth),
            ("image content part", "POST", "/chat/completions",
             body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), auth),
            ("tools", "POST", "/chat/completions", body(tools=[{"type": "function", "function": {"name": "f"}}]), auth),
            ("unknown field", "POST", "/chat/completions", body(bogus=1), auth),
            ("no model", "POST", "/chat/completions", json.dumps({"messages": ASK}).encode(), auth),
            ("unknown model", "POST", "/chat/completions", body(model="gpt-4o"), auth),
            ("models.retrieve unknown", "GET", "/models/gpt-4o", b"", auth),
            ("no API key", "POST", "/chat/completions", body(), {}),
            ("wrong API key", "POST", "/chat/completions", body(), {"Authorization": "Bearer not-a-key-0123456789"}),
            ("'user' of another key", "POST", "/chat/completions", body(user="bob"), auth),
            ("body over --max-body", "POST", "/chat/completions", body(messages=[{"role": "user", "content": "x" * 70000}]), auth),
            ("PUT", "PUT", "/chat/completions", body(), auth),
            ("GET on chat", "GET", "/chat/completions", b"", auth),
            ("unknown path", "POST", "/completions", body(), auth),
        ]
        for name, method, path, data, headers in http_cases:
            response = httpx.request(method, url + path, content=data, headers={"Content-Type": "application/json", **headers}, timeout=60)
            rows.append((name, response.status_code, response.content))
        for name, raw in [("Content-Length: abc", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"),
                          ("broken chunked framing",
                           b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n")]:
            host, port = server.address
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.sendall(raw)
                data = b""
                while part := sock.recv(65536):
                    data += part
            head, _, payload = data.partition(b"\r\n\r\n")
            rows.append((name, int(head.split(b" ")[1]), payload))
        limited = 0
        for _ in range(70):
            response = httpx.get(url + "/models", headers={"Authorization": f"Bearer {OTHER}"}, timeout=30)
            if response.status_code == 429:
                limited = 1
                rows.append(("over the rate limit (60/min, a burst)", 429, response.content))
                break
        if not limited:
            bad.append("no 429 within 70 requests")
    print("| case | status | type | param | code |\n|---|---|---|---|---|")
    for name, status, payload in rows:
        try:
            error = json.loads(payload)["error"]
            shaped = set(error) == {"message", "type", "param", "code"}
        except (ValueError, KeyError, TypeError):
            error, shaped = {}, False
        if status >= 500 or not shaped or b"Traceback" in payload:
            bad.append(name)
        print(f"| {name} | {status} | {error.get('type')} | {error.get('param')} | {error.get('code')} |")
    if bad:
        raise SystemExit(f"not OpenAI-shaped or a 5xx: {bad}")


if __name__ == "__main__":
    main()
