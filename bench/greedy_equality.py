"""Greedy answers of a run's trained checkpoint: the engine's fast loop (the default for greedy decoding) against
transformers' generate and against the answers the run recorded at its last evaluation.

    python bench/greedy_equality.py results/RUN [ARM-SEED, default treated-s0]
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
    arm, seed = arm_seed.rsplit("-s", 1)
    config = RunConfig.from_file(run / "config.yaml")
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in samples if r["arm"] == arm and r["seed"] == int(seed) and r.get("profile") in (None, config.profile)]
    last = max(r["interactions"] for r in rows)
    rows = [r for r in rows if r["interactions"] == last]
    policy = Policy.load(PolicySettings(model=str(run / "checkpoints" / arm_seed), device="cpu"))
    contexts = [policy.encode_chat(policy.messages(r["prompt"])) for r in rows]
    params = SamplingParams(max_new_tokens=config.eval.max_new_tokens or 160, temperature=0.0)
    answers = {}
    for impl in ("auto", "hf"):
        start = time.perf_counter()
        answers[impl] = HFEngine(policy, batch_size=config.eval.batch_size, impl=impl).generate(contexts, params)
        print(f"{impl}: {time.perf_counter() - start:.1f} s", flush=True)
    tokens = sum(a.token_ids == b.token_ids for a, b in zip(answers["auto"], answers["hf"]))
    recorded = sum(a.text == r["answer"] for a, r in zip(answers["auto"], rows))
    print(f"{len(rows)} prompts at {last} interactions: fast == generate token for token {tokens}/{len(rows)}; "
          f"fast == the recorded answer {recorded}/{len(rows)}")
    return 0 if tokens == recorded == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), *sys.argv[2:3]))
