"""Time one interaction's parts in isolation, then the real loop, and report the loop's overhead.

    .venv/bin/python bench/loop_parts.py                  # defaults: batch 4, 96 new tokens, 4 loop steps
    .venv/bin/python bench/loop_parts.py --threads 2      # the same with 2 torch threads

Parts (median of --repeats on one fixed batch of training prompts): generate (sampled), simulate (scripted
user), teacher forward (hindsight + neutral contexts, no grad), student forward/backward/update, and one
held-out evaluation. Then ``run_arm`` runs --steps real updates; the loop's overhead is its mean step time over
the sum of the isolated parts (generate + simulate + trainer step). Target ≤ 1.15×. Sampled answers differ in
length between the fixed batch and the loop's batches, so read the ratio with its noise in mind; the
bookkeeping ratio (step wall time over the parts timed inside the same steps) isolates the loop's own cost.
Results are printed as a markdown table and one JSON line (bench/README.md keeps the measured ones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.engine import HFEngine, SamplingParams
from core.interaction import Interaction
from core.policy import Policy
from core.prompts import load_prompts
from core.records import METRIC, TrainRecord, read_jsonl
from core.runtime import quiet_libraries, seed_everything
from core.text import Embedder
from harness.config import RunConfig
from harness.evaluate import Evaluator, Preference
from harness.loop import ArmJob, run_arm
from harness.schedule import build_schedule
from simulators.profile import load_profile
from simulators.scripted import ScriptedSimulator
from trainers.sdpo import SDPOTrainer


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    quiet_libraries()
    torch.set_num_threads(args.threads)
    config = RunConfig.model_validate({
        "batch_size": args.batch_size, "interactions": args.batch_size * args.steps, "threads": args.threads,
        "generation": {"max_new_tokens": args.max_new_tokens}, "prompts": {"eval_prompts": args.eval_prompts},
        "eval": {"every": args.batch_size * args.steps}, "control": False, "oracle": False, "save_checkpoint": False,
    })
    profile = load_profile(config.profile)
    config = config.with_budgets(profile.min_words())
    prompts = load_prompts(config.prompts)
    policy = Policy.load(config.policy)
    policy.snapshot_initial()
    engine = HFEngine(policy)
    trainer = SDPOTrainer(policy, config.trainer)
    simulator = ScriptedSimulator()
    texts = [prompts.draw(i, 0) for i in range(args.batch_size)]
    messages = [policy.messages(p) for p in texts]
    contexts = [policy.encode_chat(m) for m in messages]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)

    def generate():
        seed_everything(0)
        return engine.generate(contexts, params)

    parts: dict[str, float] = {}
    parts["generate"], answers = timed(generate, args.repeats)
    conversations = [[*m, {"role": "assistant", "content": a.text}] for m, a in zip(messages, answers)]
    parts["simulate"], followups = timed(lambda: simulator.respond(conversations, profile), args.repeats)
    batch = [Interaction(i, p, m, c, a, f) for i, (p, m, c, a, f) in enumerate(zip(texts, messages, contexts, answers, followups))]
    completions = [list(a.token_ids) for a in answers]
    hindsight = [policy.encode_chat(trainer.hindsight_messages(i, i.followup.text)) for i in batch]
    neutral = [policy.encode_chat(trainer.hindsight_messages(i, trainer.neutral_followup(i))) for i in batch]

    def teacher():
        with torch.no_grad():
            policy.score(hindsight, completions)
            policy.score(neutral, completions)

    parts["teacher forward"], _ = timed(teacher, args.repeats)
    parts["trainer step (teacher + student fwd/bwd/update)"], _ = timed(lambda: trainer.step(batch), args.repeats)
    parts["student fwd/bwd/update"] = parts["trainer step (teacher + student fwd/bwd/update)"] - parts["teacher forward"]
    evaluator = Evaluator([Preference(profile)], prompts.heldout, config.eval, Embedder())
    evaluator.set_reference([""] * len(prompts.heldout))
    parts[f"evaluation ({args.eval_prompts} prompts)"], _ = timed(
        lambda: evaluator.run(policy, HFEngine(policy, batch_size=config.eval.batch_size), arm="treated", seed=0, interactions=0), 1
    )

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        run_arm(ArmJob(config, run_dir, "treated", 0, tuple([""] * len(prompts.heldout)), build_schedule(config)), lambda event: None)
        steps = [r for r in read_jsonl(run_dir / "metrics.jsonl", METRIC) if isinstance(r, TrainRecord)]
    inside = sum(r.timings["generate"] + r.timings["simulate"] + r.timings["train"] for r in steps)
    wall = sum(r.timings["step"] for r in steps)
    isolated = parts["generate"] + parts["simulate"] + parts["trainer step (teacher + student fwd/bwd/update)"]
    overhead = wall / len(steps) / isolated

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s)"
    print(f"\n## loop parts — batch {args.batch_size}, {args.max_new_tokens} new tokens, {machine}\n")
    print("| part | seconds |\n|---|---|")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| loop step (mean of {len(steps)}) / isolated parts (generate + simulate + trainer step) | {wall / len(steps):.2f} / {isolated:.2f} = **{overhead:.3f}×** (target ≤ 1.15×) |")
    print(f"| loop bookkeeping: step wall / parts timed inside the steps | {wall:.1f} / {inside:.1f} = {wall / inside:.3f}× |")
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "args": vars(args), "parts_s": parts,
                      "loop_step_s": wall / len(steps), "loop_overhead": overhead, "bookkeeping": wall / inside}))


if __name__ == "__main__":
    main()
