"""Greedy answers of a run's trained checkpoint (or with ``initial``, the untrained model) three ways: the default engine
(fast loop, oneDNN linears on the CPU), the fast loop on PyTorch's own linears, and transformers' generate; each
against the others and against the answers the run recorded at that evaluation.

    python bench/greedy_equality.py results/RUN [ARM-SEED, default treated-s0 | initial]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from core.engine import HFEngine, SamplingParams
from core.policy import Policy, PolicySettings
from core.runtime import quiet_libraries
from harness.config import RunConfig


def main(run: Path, arm_seed: str = "treated-s0") -> int:
    quiet_libraries()
    torch.set_num_threads(1)
    config = RunConfig.from_file(run / "config.yaml")
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    arm, seed = ("initial", "0") if arm_seed == "initial" else arm_seed.rsplit("-s", 1)
    rows = [r for r in samples if r["arm"] == arm and r["seed"] == int(seed) and r.get("profile") in (None, config.profile)]
    last = max(r["interactions"] for r in rows)
    rows = [r for r in rows if r["interactions"] == last]
    model = config.policy.model if arm == "initial" else str(run / "checkpoints" / arm_seed)
    policy = Policy.load(PolicySettings(model=model, device="cpu"))
    contexts = [policy.encode_chat(policy.messages(r["prompt"])) for r in rows]
    params = SamplingParams(max_new_tokens=config.eval.max_new_tokens or 160, temperature=0.0)
    engines = {"default": HFEngine(policy, batch_size=config.eval.batch_size), "aten": HFEngine(policy, batch_size=config.eval.batch_size, linear="aten"),
               "generate": HFEngine(policy, batch_size=config.eval.batch_size, impl="hf")}
    answers = {}
    for name, engine in engines.items():
        start = time.perf_counter()
        answers[name] = engine.generate(contexts, params)
        print(f"{name} ({engine.impl}, {engine.linear} linears): {time.perf_counter() - start:.1f} s", flush=True)
    same = {(a, b): sum(x.token_ids == y.token_ids for x, y in zip(answers[a], answers[b])) for a, b in [("default", "aten"), ("aten", "generate")]}
    recorded = {name: sum(a.text == r["answer"] for a, r in zip(out, rows)) for name, out in answers.items()}
    print(f"{len(rows)} prompts, {arm_seed} at {last} interactions: token for token, default == aten {same['default', 'aten']}, "
          f"aten == generate {same['aten', 'generate']}; equal to the recorded answers: "
          + ", ".join(f"{name} {n}" for name, n in recorded.items()) + f" (of {len(rows)})")
    return 0 if same["aten", "generate"] == len(rows) else 1

if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), *sys.argv[2:3]))
