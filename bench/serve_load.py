"""Load test of `hindsight serve --learn`: simulated users over real HTTP on 127.0.0.1 with the official `openai` client.

    .venv/bin/python bench/serve_load.py                      # 16 users (8 concise, 8 detailed), 16 turns each
    .venv/bin/python bench/serve_load.py --users 4 --turns 4 --answer-tokens 48   # a quick pass

A `hindsight serve --learn` subprocess (its own keys file and state folder) serves every user at once. First each
user's untrained answers to the held-out probe prompts are recorded (greedy), then all users run concurrently, one
thread each: per turn the user asks a training prompt (sampled answer, temperature 1, as the loop's interactions), the
scripted simulator of the user's profile writes the follow-up, and the follow-up goes back with the conversation (the
interaction, journaled by the server). Once every journaled interaction is applied, each user's answers to the same
probes are recorded again (greedy, now with their adapter). Prints a markdown table and one JSON line: throughput,
p50/p95 latency, interactions journaled vs applied, updates, and per profile the mean words before and after and the
share of users whose answers got shorter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.prompts import PromptSettings, load_prompts  # noqa: E402
from simulators.profile import load_profile, words  # noqa: E402
from simulators.scripted import ScriptedSimulator  # noqa: E402


def start_server(state: Path, keys: Path, args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-c", "from harness.cli import run; run()", "serve", "--learn", "--keys", str(keys), "--state", str(state),
               "--port", "0", "--device", "cpu", "--learn-batch", str(args.learn_batch), "--learn-idle", "30", "--max-tokens", "512",
               "--model", args.model]
    if args.threads:
        command += ["--threads", str(args.threads)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
    line = process.stdout.readline()
    if not line.startswith("serving"):
        raise SystemExit(f"the server did not start: {line}")
    return process, line.split(" at ")[1].split()[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16, help="simulated users, half concise and half detailed")
    parser.add_argument("--turns", type=int, default=16, help="interactions per user")
    parser.add_argument("--answer-tokens", type=int, default=128, help="max_tokens of each answer")
    parser.add_argument("--probes", type=int, default=4, help="held-out prompts answered before and after, per user")
    parser.add_argument("--learn-batch", type=int, default=4, help="the server's --learn-batch")
    parser.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    parser.add_argument("--model", default="smollm2-135m", help="the served policy")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    import openai

    profiles = {name: load_profile(name) for name in ("concise", "detailed")}
    users = [(f"user{i:02d}-{'concise' if i % 2 == 0 else 'detailed'}", "concise" if i % 2 == 0 else "detailed") for i in range(args.users)]
    keys = {user: f"{user}-key-{os.urandom(8).hex()}" for user, _ in users}
    admin = f"admin-{os.urandom(12).hex()}"
    prompts = load_prompts(PromptSettings())
    probes = list(prompts.heldout[-args.probes:])
    simulator = ScriptedSimulator()
    latencies: dict[str, list[float]] = {"answer": [], "follow-up": []}
    tokens = [0]
    lock = threading.Lock()

    with tempfile.TemporaryDirectory() as tmp:
        keys_file = Path(tmp) / "keys.yaml"
        keys_file.write_text(f"admin: {admin}\nkeys:\n" + "".join(f"  {k}: {u}\n" for u, k in keys.items()))
        process, url = start_server(Path(tmp) / "state", keys_file, args)
        try:
            clients = {user: openai.OpenAI(base_url=url, api_key=keys[user], max_retries=0, timeout=3600) for user, _ in users}
            model = clients[users[0][0]].models.list().data[0].id

            def probe_words(user: str) -> list[int]:
                out = []
                for prompt in probes:
                    reply = clients[user].chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                                  max_tokens=args.answer_tokens, temperature=0)
                    out.append(words(reply.choices[0].message.content))
                return out

            def each_user(fn) -> dict[str, object]:
                results: dict[str, object] = {}
                threads = [threading.Thread(target=lambda u=u: results.__setitem__(u, fn(u))) for u, _ in users]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return results

            before = each_user(probe_words)

            def converse(user: str) -> None:
                profile = profiles[dict(users)[user]]
                offset = users.index((user, dict(users)[user])) * args.turns
                for turn in range(args.turns):
                    prompt = prompts.train[(offset + turn) % len(prompts.train)]
                    messages = [{"role": "user", "content": prompt}]
                    t0 = time.perf_counter()
                    reply = clients[user].chat.completions.create(model=model, messages=messages, max_tokens=args.answer_tokens, temperature=1.0)
                    t1 = time.perf_counter()
                    answer = reply.choices[0].message.content
                    followup = simulator.respond([[*messages, {"role": "assistant", "content": answer}]], profile)[0].text
                    again = clients[user].chat.completions.create(model=model, messages=[*messages, {"role": "assistant", "content": answer},
                                                                                          {"role": "user", "content": followup}], max_tokens=8, temperature=1.0)
                    t2 = time.perf_counter()
                    with lock:
                        latencies["answer"].append(t1 - t0)
                        latencies["follow-up"].append(t2 - t1)
                        tokens[0] += reply.usage.completion_tokens + again.usage.completion_tokens
                        if len(latencies["answer"]) % args.users == 0:
                            print(f"{len(latencies['answer'])}/{args.users * args.turns} turns, {time.perf_counter() - start:.0f} s", file=sys.stderr,
                                  flush=True)

            start = time.perf_counter()
            each_user(converse)
            served = time.perf_counter() - start
            admin_headers = {"Authorization": f"Bearer {admin}"}
            while True:
                stats = {u["user"]: u for u in httpx.get(url.removesuffix("/v1") + "/admin/users", headers=admin_headers, timeout=60).json()["data"]}
                if all(s["applied"] == s["interactions"] for s in stats.values()):
                    break
                time.sleep(1)
            settled = time.perf_counter() - start
            after = each_user(probe_words)
        finally:
            process.terminate()
            process.wait(60)

    requests = sum(len(v) for v in latencies.values())
    rows = [("users × turns", f"{args.users} × {args.turns} ({args.users // 2} concise, {args.users - args.users // 2} detailed)"),
            ("requests (answers + follow-ups)", str(requests)),
            ("wall time, conversations / until every update applied", f"{served:.0f} s / {settled:.0f} s"),
            ("throughput", f"{requests / served:.2f} requests/s, {tokens[0] / served:.1f} completion tokens/s"),
            ("answer latency p50 / p95", f"{statistics.median(latencies['answer']):.1f} s / {percentile(latencies['answer'], 0.95):.1f} s"),
            ("follow-up latency p50 / p95", f"{statistics.median(latencies['follow-up']):.1f} s / {percentile(latencies['follow-up'], 0.95):.1f} s"),
            ("interactions journaled / applied", f"{sum(s['interactions'] for s in stats.values())} / {sum(s['applied'] for s in stats.values())}"),
            ("trained on / skipped (by reason)", f"{sum(s['trained'] for s in stats.values())} / "
                                                 f"{_merge([s['skipped'] for s in stats.values()])}"),
            ("updates", str(sum(s["updates"] for s in stats.values())))]
    summary = {}
    for name in profiles:
        mine = [u for u, p in users if p == name]
        b = statistics.mean(statistics.mean(before[u]) for u in mine)
        a = statistics.mean(statistics.mean(after[u]) for u in mine)
        shorter = sum(statistics.mean(after[u]) < statistics.mean(before[u]) for u in mine)
        kl = statistics.mean(stats[u]["kl"] for u in mine)
        summary[name] = {"words_before": b, "words_after": a, "shorter": shorter, "users": len(mine), "kl": kl}
        rows.append((f"{name}: mean words before → after (probes, greedy)",
                     f"{b:.1f} → {a:.1f}; shorter for {shorter}/{len(mine)} users; mean KL {kl:.4f}"))
    table = "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    print(table)
    print(json.dumps({"args": vars(args) | {"out": str(args.out)}, "seconds": served, "requests": requests, "tokens": tokens[0],
                      "latency": {k: {"p50": statistics.median(v), "p95": percentile(v, 0.95)} for k, v in latencies.items()},
                      "users": {u: {k: stats[u][k] for k in ("interactions", "applied", "trained", "skipped", "updates", "kl")} for u in stats},
                      "profiles": summary}))
    if args.out:
        args.out.write_text(table)


def _merge(counts: list[dict[str, int]]) -> str:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return ", ".join(f"{k} {v}" for k, v in sorted(total.items())) or "none"


if __name__ == "__main__":
    main()
