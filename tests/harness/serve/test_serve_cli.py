"""`hindsight serve` on the command line: it answers on a free port, and refuses bad options and keys files in one line
before loading the model."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest


def test_serve_picks_a_free_port_answers_and_stops_on_sigterm():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from harness.cli import run; run()", "serve", "--port", "0", "--device", "cpu", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, line = time.monotonic() + 120, ""
        while time.monotonic() < deadline and not line.startswith("serving"):
            line = process.stdout.readline()
            assert line, "serve exited before printing its address"
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")
        assert httpx.get(url + "/models", timeout=10).json()["data"][0]["id"] == "smollm2-135m"
        reply = httpx.post(url + "/chat/completions", json={"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
                           timeout=60)
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] <= 2
    finally:
        process.terminate()
        rest = process.communicate(timeout=30)[0]
    assert process.returncode == 0 and "Traceback" not in rest, rest


def write(tmp_path, text: str):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    return str(path)


KEY = "k" * 20


@pytest.mark.parametrize("args, message", [
    (["--learn"], "--learn needs --keys FILE"),
    (["--rate-limit", "10"], "--rate-limit is per user: it needs --keys FILE"),
    (["--guard", "maybe"], "'maybe' is not one of 'none', 'principles', 'skip_flagged', 'both'"),
    (["--default-tokens", "300", "--max-tokens", "200"], "--default-tokens 300 is above --max-tokens 200"),
])
def test_bad_options_fail_in_one_line(cli, args, message):
    result = cli("serve", *args)
    assert result.code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("text, where", [
    ("keys:\n  short: alice\n", "keys.yaml:2: field 'keys': an API key must be 16-256 printable characters"),
    (f"keys:\n  {KEY}: alice\n  {'m' * 20}: 'bad id!'\n", "keys.yaml:3: field 'keys': a user id must be"),
    (f"keys:\n  {KEY}: alice\n  {KEY}: bob\n", "keys.yaml:3: field 'keys': the same API key is listed twice"),
    (f"keys:\n  {KEY}: alice\nadmin: {KEY}\n", "keys.yaml:3: field 'admin': an admin key must not also be a user's key"),
    (f"keys:\n  {KEY}: alice\nadmins: x\n", "keys.yaml:3: field 'admins': unknown field"),
    ("keys: {}\n", "keys.yaml:1: field 'keys': 'keys' must map at least one API key"),
    ("keys: [\n", "invalid YAML"),
])
def test_bad_keys_files_fail_in_one_line_naming_the_line_and_never_the_key(cli, tmp_path, text, where):
    result = cli("serve", "--keys", write(tmp_path, text), "--learn")
    assert result.code == 2 and where in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert KEY not in result.stderr

