"""What one resumable commit costs: seconds and bytes to save an arm's state, and seconds to load it back.

    .venv/bin/python bench/checkpoint_cost.py            # the embedded SmolLM2-135M, full fine-tuning
    .venv/bin/python bench/checkpoint_cost.py --lora     # the same under a LoRA adapter (r=16)

The state is what ``run_arm`` commits every ``checkpoint_every`` interactions: trainable weights, AdamW state after
one real SDPO-sized update, and the RNG states. Median of --repeats commits; one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.policy import LoraSettings, Policy, PolicySettings
from core.runtime import quiet_libraries
from harness.checkpoint import ArmCheckpoints, ArmState, load_trainable_weights, rng_state, trainable_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    quiet_libraries()
    torch.set_num_threads(args.threads)
    policy = Policy.load(PolicySettings(device="cpu", lora=LoraSettings() if args.lora else None))
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.tensor([policy.encode_chat(policy.messages("Say hello."))])
    policy.model(input_ids=ids).logits.mean().backward()  # fills every AdamW moment
    optimizer.step()
    saves, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = ArmCheckpoints(Path(tmp) / "treated-s0")
        for step in range(args.repeats):
            start = time.perf_counter()
            checkpoints.save(ArmState(step=step, done=4 * (step + 1)), {
                "weights": trainable_weights(policy.model), "trainer": {"optimizer": optimizer.state_dict()}, "rng": rng_state(),
            })
            saves.append(time.perf_counter() - start)
            size = sum(f.stat().st_size for f in checkpoints.folder.rglob("*") if f.is_file())
            start = time.perf_counter()
            state = checkpoints.load(checkpoints.latest())
            load_trainable_weights(policy.model, state["weights"])
            optimizer.load_state_dict(state["trainer"]["optimizer"])
            loads.append(time.perf_counter() - start)
    result = {"lora": args.lora, "trainable_params": sum(p.numel() for p in params), "bytes": size,
              "save_s": round(statistics.median(saves), 2), "load_s": round(statistics.median(loads), 2)}
    print(f"| {'LoRA r=16' if args.lora else 'full'} | {result['trainable_params'] / 1e6:.1f} M | {size / 2**20:.0f} MiB | "
          f"{result['save_s']:.2f} s | {result['load_s']:.2f} s |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
