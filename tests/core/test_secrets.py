"""API keys never reach disk: a planted key goes to the provider and to no file a real run or UserEval writes."""

from __future__ import annotations

import json
import os
import subprocess

from core.records import InteractionRecord, read_jsonl

from conftest import HINDSIGHT
from stub_provider import StubProvider

KEY = "sk-planted-0123456789abcdef"


def _reply(body: dict) -> tuple[str, int, int]:
    """'A' for a judge prompt, a complaint for the user simulator."""
    return ("A" if "Reply A" in body["messages"][-1]["content"] else "Shorter, please."), 5, 1


def _leaks(*folders) -> list[str]:
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert files
    return [str(p) for p in files if KEY.encode() in p.read_bytes()]


def test_a_planted_api_key_reaches_the_provider_and_no_written_file(tmp_path):
    cache = tmp_path / "llm-cache"
    env = {**os.environ, "HINDSIGHT_LLM_CACHE": str(cache), "PLANTED_KEY": KEY}
    # no oracle, so the first call is the simulator's: it fails with a body echoing the key (providers do for bad keys), recorded redacted
    with StubProvider(_reply, faults=[500]) as stub:
        args = [
            "personalize", "-n", "2", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "2", "--max-new-tokens", "12",
            "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=2", "--no-control", "--no-oracle", "--jobs", "1",
            "--simulator-model", "openai/stub", "--api-base", stub.base, "--api-key-env", "PLANTED_KEY", "--set", "simulator.llm.retries=0",
            "--judge-model", "openai/stub", "--judge-api-base", stub.base, "--judge-api-key-env", "PLANTED_KEY",
            "--results", str(tmp_path / "results"), "--run-id", "secret",
        ]
        run = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=900, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        rows = tmp_path / "turns.jsonl"
        rows.write_text(json.dumps({"prompt": "What is DNS?", "response": "Names to addresses.", "reference": "DNS maps names.",
                                    "history": ["I like short answers."]}) + "\n")
        usereval = subprocess.run([*HINDSIGHT, "usereval", str(rows), "--judge-model", "openai/stub", "--judge-api-base", stub.base,
                                   "--judge-api-key-env", "PLANTED_KEY", "--out", str(tmp_path / "results" / "usereval")],
                                  capture_output=True, text=True, timeout=300, env=env)
        assert usereval.returncode == 0, usereval.stdout + usereval.stderr
    assert stub.injected == {"500": 1}
    sent = {r["auth"] for r in stub.requests}
    assert sent == {f"Bearer {KEY}"} and len(stub.requests) >= 8  # simulator, judge (both orders), persona, UserEval's three axes
    failed = [r for r in read_jsonl(tmp_path / "results" / "secret" / "interactions.jsonl", InteractionRecord) if r.failed]
    assert len(failed) == 1 and "Bearer ***" in failed[0].failed  # the echoed key, masked
    assert _leaks(tmp_path / "results", cache) == []
    assert KEY not in run.stdout + run.stderr + usereval.stdout + usereval.stderr
