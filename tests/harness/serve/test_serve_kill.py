"""kill -9 of a learning server at seeded random points: after restarts, every acknowledged interaction is journaled once
and applied once, and each user's adapter is bit for bit the adapter of a run that was never killed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load_file

from conftest import HINDSIGHT

KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef"}
ADMIN = "admin-key-0123456789abcdef"
ANSWER = ("Rice is a grain that people cook in many ways. First rinse it under cold water, then add two cups of water for each "
          "cup of rice, bring it to the boil, lower the heat and simmer it covered for eighteen minutes.")
TURNS = [("alice", "How do I cook rice?", "Way too long. One sentence, please."),
         ("bob", "How do I cook rice?", "Too short. Walk me through it with an example."),
         ("alice", "How do I boil rice?", "Shorter, please. Just the key point."),
         ("bob", "How do I make rice?", "More depth please, with the caveats that matter."),
         ("alice", "How should I cook rice?", "Too long. I just need the short version."),
         ("bob", "What is the way to cook rice?", "Thanks, that explains it properly.")]


def serve(state: Path, keys: Path, log: Path) -> tuple[subprocess.Popen, str]:
    args = ["serve", "--learn", "--keys", str(keys), "--state", str(state), "--port", "0", "--device", "cpu", "--threads", "1",
            "--learn-batch", "1", "--learn-idle", "0", "--default-tokens", "2"]
    with log.open("a") as out:
        process = subprocess.Popen([*HINDSIGHT, *args], stdout=subprocess.PIPE, stderr=out, text=True, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = process.stdout.readline()
    assert line.startswith("serving"), f"{line}{log.read_text()[-2000:]}"
    return process, line.split(" at ")[1].split()[0]


def send(url: str, n: int) -> bool:
    """Turn ``n`` (its follow-up carries the interaction); True once the server acknowledged it."""
    user, prompt, followup = TURNS[n]
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": followup}]
    try:
        response = httpx.post(url + "/chat/completions", json={"model": "smollm2-135m", "messages": messages, "temperature": 0},
                              headers={"Authorization": f"Bearer {KEYS[user]}"}, timeout=120)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def users(url: str) -> dict[str, dict]:
    data = httpx.get(url.removesuffix("/v1") + "/admin/users", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()["data"]
    return {u["user"]: u for u in data}


def settle(url: str, timeout: float = 600) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        stats = users(url)
        if all(u["applied"] == u["interactions"] for u in stats.values()):
            return stats
        assert time.monotonic() < deadline, stats
        time.sleep(0.3)


def on_disk(state: Path) -> dict:
    """What a killed server left: journal lines per user, and each user's committed applied count."""
    journal = state / "journal.jsonl"
    lines = [json.loads(x) for x in journal.read_text().splitlines() if x.strip()] if journal.is_file() else []
    committed = {p.parent.name: json.loads(p.read_text())["applied"] for p in state.glob("users/*/current.json")}
    return {"journaled": {u: sum(e["user"] == u for e in lines) for u in KEYS}, "applied": committed}


def adapters(state: Path) -> dict[str, dict]:
    out = {}
    for user in KEYS:
        pointer = json.loads((state / "users" / user / "current.json").read_text())
        out[user] = load_file(str(state / "users" / user / pointer["folder"] / "adapter.safetensors"))
    return out


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kill_9_loses_no_interaction_and_applies_none_twice(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text("admin: " + ADMIN + "\nkeys:\n" + "".join(f"  {k}: {u}\n" for u, k in KEYS.items()))
    process, url = serve(tmp_path / "ref", keys, tmp_path / "ref.log")
    try:
        assert all(send(url, n) for n in range(len(TURNS)))
        reference = settle(url)
    finally:
        process.kill()
        process.wait()
    seed = int(os.environ.get("HINDSIGHT_KILL_SEED", "0"))
    rng, state, done, kills = random.Random(seed), tmp_path / "killed", 0, []
    for target in sorted(rng.sample(range(1, len(TURNS) - 1), 3)):
        process, url = serve(state, keys, tmp_path / "killed.log")
        while done < target:
            done += send(url, done)
        in_flight = threading.Thread(target=send, args=(url, done))  # the next turn, on the wire when the kill may come: resent after
        in_flight.start()
        time.sleep(rng.uniform(0, 4))  # lands in a request, an update, a commit or idle time
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        in_flight.join()
        kills.append({"acknowledged": done, **on_disk(state)})
    process, url = serve(state, keys, tmp_path / "killed.log")
    try:
        while done < len(TURNS):
            done += send(url, done)
        final = settle(url)
    finally:
        process.kill()
        process.wait()
    counts = {u: {k: s[k] for k in ("interactions", "applied", "trained", "skipped", "updates")} for u, s in final.items()}
    print(f"kill seed {seed}: {json.dumps(kills)}; final {json.dumps(counts)}")  # the counts quoted in the closing note
    assert any(sum(k["applied"].values()) < sum(k["journaled"].values()) for k in kills), kills  # some kill left work pending
    for user in KEYS:
        mine = sum(t[0] == user for t in TURNS)
        stats, ref = final[user], reference[user]
        assert stats["interactions"] == stats["applied"] == mine, (user, stats)  # every acknowledged one journaled once, applied once
        assert stats["trained"] + sum(stats["skipped"].values()) == mine
        assert (stats["trained"], stats["skipped"], stats["updates"], stats["kl"]) == (ref["trained"], ref["skipped"], ref["updates"], ref["kl"])
    assert on_disk(state)["journaled"] == {u: sum(t[0] == u for t in TURNS) for u in KEYS}
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "keys.yaml"]  # logs, journals, adapters
    assert not [p for p in written if any(k.encode() in p.read_bytes() for k in [*KEYS.values(), ADMIN])]  # keys reach no log or result
    ref_weights, weights = adapters(tmp_path / "ref"), adapters(state)
    for user in KEYS:
        assert ref_weights[user].keys() == weights[user].keys()
        assert all((ref_weights[user][k] == weights[user][k]).all() for k in weights[user]), user  # the same updates, in the same order, once
