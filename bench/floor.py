"""This machine's floor, measured in the same process, and each part of one interaction and one evaluation beside it.

    .venv/bin/python bench/floor.py            # a few minutes: decode steps old vs new, one interaction, one evaluation
    .venv/bin/python bench/floor.py --quick    # fewer tokens and prompts, one repeat

Floor: streaming read bandwidth (the best of a large tensor's sum and copy, GB/s) and fp32 GEMM throughput at the
model's shapes (GFLOP/s), both on the torch threads the run uses. A part's floor is the larger of the bytes it must
read at that bandwidth and the FLOPs it must do at that GEMM rate:
- decode step at batch B, context L: max((weights + B·L KV bytes) / bandwidth, B · FLOPs(token at L) / GEMM);
- prefill, teacher forward: FLOPs of the real (unpadded) tokens / GEMM, at least the weights once / bandwidth;
- student forward/backward/update: 3× the forward FLOPs, plus AdamW's pass over weights, grads and moments
  (4 reads + 3 writes of fp32 parameters) / bandwidth;
- generation of a batch: its prefill floor plus a decode-step floor per step at the rows still running;
- the scripted user and the rules judge do no model work: no floor, time only.
FLOPs(token at L) = 2·(decoder + LM-head parameters) + 4·layers·hidden·L (attention). Decode steps are timed per
step inside the generation (median over its steps, best over repeats, ``hf`` and ``fast`` interleaved). Prints a
markdown table and one JSON line per part: {"part", "seconds", "floor", "ratio"} (floor and ratio null without one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from core.engine import Generation, HFEngine, SamplingParams
from core.interaction import Interaction
from core.policy import Policy
from core.prompts import load_prompts
from core.runtime import peak_memory_gb, quiet_libraries, seed_everything
from harness.config import RunConfig
from judges.base import Pair
from judges.rules import RuleJudge
from simulators.profile import load_profile
from simulators.scripted import ScriptedSimulator
from trainers.sdpo import SDPOTrainer


def memory_line() -> str:
    """This process's peak resident memory (one arm's work: weights, frozen copy, AdamW moments, gradients, activations),
    and now: resident, proportional (shared pages split between the processes mapping them) and shared file pages."""
    fields = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0]) / 1e6  # kB -> GB
    now = (f"; now {fields['Rss']:.2f} GB resident, {fields['Pss']:.2f} GB proportional, {fields.get('Shared_Clean', 0) + fields.get('Private_Clean', 0):.2f} GB"
           " clean file pages (the frozen copy mapped from the weights file, shared by a run's arm processes)") if fields else ""
    return f"peak memory {peak_memory_gb():.2f} GB (one arm's work)" + now


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class Floor:
    """The machine's bandwidth and GEMM rate, and the model's sizes, to price a part."""

    def __init__(self, policy: Policy, repeats: int):
        big = torch.ones(128 * 1024 * 1024)  # 512 MiB: far past any cache
        dst = torch.empty_like(big)
        read = best(lambda: big.sum(), repeats + 2)
        copy = best(lambda: dst.copy_(big), repeats + 2)
        self.bandwidth = max(big.nbytes / read, 2 * big.nbytes / copy)  # bytes/s (a copy reads and writes)
        rates = []
        for m, k, n in [(512, 576, 576), (512, 576, 1536), (512, 1536, 576), (128, 576, 49152)]:
            a, b = torch.randn(m, k), torch.randn(k, n)
            rates.append(2 * m * k * n / best(lambda a=a, b=b: a @ b, repeats + 2))
        self.gemm = statistics.median(rates)  # FLOP/s
        config = policy.model.config
        self.layers, self.hidden = config.num_hidden_layers, config.hidden_size
        self.kv_width = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
        params = sum(p.numel() for p in policy.model.parameters())
        embed = policy.model.get_input_embeddings().weight.numel()
        self.weight_bytes = params * 4  # the tied embedding is read once, as the LM head
        self.decoder_params = params - embed
        self.head_params = policy.model.get_output_embeddings().weight.numel()
        self.params = params

    def token_flops(self, context: float, head: bool = True) -> float:
        return 2 * (self.decoder_params + (self.head_params if head else 0)) + 4 * self.layers * self.hidden * context

    def kv_bytes(self, rows: int, context: float) -> float:
        return rows * context * self.layers * 2 * self.kv_width * 4

    def decode_step(self, rows: int, context: float) -> float:
        return max((self.weight_bytes + self.kv_bytes(rows, context)) / self.bandwidth, rows * self.token_flops(context) / self.gemm)

    def prefill(self, lengths: Sequence[int]) -> float:
        flops = sum(n * self.token_flops(n / 2, head=False) + 2 * self.head_params for n in lengths)
        return max(self.weight_bytes / self.bandwidth, flops / self.gemm)

    def scoring(self, contexts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> float:
        """One no-grad CompletionScorer pass: the decoder over context + completion, the LM head at completion positions."""
        flops = sum((len(c) + len(y)) * self.token_flops((len(c) + len(y)) / 2, head=False) + len(y) * 2 * self.head_params
                    for c, y in zip(contexts, completions))
        return max(self.weight_bytes / self.bandwidth, flops / self.gemm)

    def student(self, contexts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> float:
        forward = self.scoring(contexts, completions)
        return 3 * forward + 7 * self.params * 4 / self.bandwidth

    def generation(self, contexts: Sequence[Sequence[int]], answers: Sequence[Generation], batch_size: int) -> float:
        total = 0.0
        for start in range(0, len(contexts), batch_size):
            ctx, ans = contexts[start : start + batch_size], answers[start : start + batch_size]
            total += self.prefill([len(c) for c in ctx])
            for step in range(1, max(len(a.token_ids) for a in ans)):
                running = [len(c) + step for c, a in zip(ctx, ans) if len(a.token_ids) > step]
                total += self.decode_step(len(running), statistics.mean(running))
        return total


def decode_steps(policy: Policy, contexts: list[list[int]], batch: int, tokens: int, repeats: int) -> tuple[dict[str, float], bool]:
    """Median decode-step seconds per impl (best of ``repeats``, impls interleaved) and whether their greedy tokens agree."""
    times: dict[str, float] = {"hf": float("inf"), "fast": float("inf"), "fast+onednn": float("inf")}
    answers: dict[str, list] = {}
    for _ in range(repeats):
        for impl in times:
            engine = HFEngine(policy, batch_size=batch, impl=impl.split("+")[0], linear="onednn" if impl.endswith("onednn") else "aten")
            engine.step_times = []
            answers[impl] = [g.token_ids for g in engine.generate(contexts[:batch], SamplingParams(max_new_tokens=tokens, temperature=0.0))]
            ticks = engine.step_times
            times[impl] = min(times[impl], statistics.median(b - a for a, b in zip(ticks, ticks[1:])))
    return times, {impl: answers[impl] == answers["hf"] for impl in times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tokens and prompts, one repeat")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="best of this many (default 2, --quick 1)")
    parser.add_argument("--decode-tokens", type=int, default=None, help="new tokens per decode-step measurement (default 24, --quick 8)")
    parser.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts in the evaluation (default 32, --quick 8)")
    parser.add_argument("--compare", action="store_true", help="also time the interaction's and the evaluation's generation with impl='hf' (and the evaluation's with linear='onednn')")
    parser.add_argument("--batches", default="1,4,32", help="decode-step batch sizes")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)
    decode_tokens = args.decode_tokens or (8 if args.quick else 24)
    eval_prompts = args.eval_prompts or (8 if args.quick else 32)
    quiet_libraries()
    torch.set_num_threads(args.threads)

    config = RunConfig.model_validate({"prompts": {"eval_prompts": 32}, "control": False, "oracle": False, "save_checkpoint": False})
    profile = load_profile(config.profile)
    config = config.with_budgets(profile.min_words())
    prompts = load_prompts(config.prompts)
    policy = Policy.load(config.policy)
    policy.snapshot_initial()  # as an arm does: the frozen reference, mapped from the weights file
    floor = Floor(policy, repeats)
    rows: list[dict] = []

    def record(part: str, seconds: float, part_floor: float | None, note: str = "") -> None:
        ratio = seconds / part_floor if part_floor else None
        rows.append({"part": part, "seconds": seconds, "floor": part_floor, "ratio": ratio, "note": note})
        print(json.dumps({"part": part, "seconds": round(seconds, 5), "floor": None if part_floor is None else round(part_floor, 5),
                          "ratio": None if ratio is None else round(ratio, 3)}), flush=True)

    # decode steps, old (transformers' generate) against new (the fast loop), interleaved
    heldout = [policy.encode_chat(policy.messages(p)) for p in prompts.heldout]
    for batch in (int(b) for b in args.batches.split(",")):
        ctx = (heldout * (batch // len(heldout) + 1))[:batch]
        times, same = decode_steps(policy, ctx, batch, decode_tokens, repeats)
        context = statistics.mean(len(c) for c in ctx) + decode_tokens / 2
        step_floor = floor.decode_step(batch, context)
        for impl, seconds in times.items():
            record(f"decode step, batch {batch} ({impl})", seconds, step_floor, "greedy tokens equal hf's" if same[impl] else "greedy tokens DIFFER from hf's")

    # one interaction: sampled answers to a training batch, the scripted user, the trainer's passes
    engine = HFEngine(policy)  # the run's default: the fast loop, oneDNN linears on the CPU (--compare: transformers' generate)
    texts = [prompts.draw(i, 0) for i in range(config.batch_size)]
    messages = [policy.messages(p) for p in texts]
    contexts = [policy.encode_chat(m) for m in messages]
    params = SamplingParams(max_new_tokens=config.generation.max_new_tokens if not args.quick else 48,
                            temperature=config.generation.temperature, top_p=config.generation.top_p)
    answers: list[Generation] = []

    def generate() -> None:
        seed_everything(0)
        answers[:] = engine.generate(contexts, params)

    seconds = best(generate, repeats)
    if args.compare:
        old = HFEngine(policy, impl="hf")
        old_answers = []
        old_s = best(lambda: (seed_everything(0), old_answers.__setitem__(slice(None), old.generate(contexts, params))), repeats)
        record(f"generate (batch {len(contexts)}, sampled, {max(len(a.token_ids) for a in old_answers)} tokens max) (hf)", old_s,
               floor.generation(contexts, old_answers, old.batch_size))
    record("prefill (interaction batch)", best(lambda: engine.generate(contexts, SamplingParams(max_new_tokens=1)), repeats),
           floor.prefill([len(c) for c in contexts]))
    record(f"generate (batch {len(contexts)}, sampled, {max(len(a.token_ids) for a in answers)} tokens max) (fast)", seconds,
           floor.generation(contexts, answers, engine.batch_size))
    simulator = ScriptedSimulator()
    conversations = [[*m, {"role": "assistant", "content": a.text}] for m, a in zip(messages, answers)]
    followups: list = []
    record("scripted user", best(lambda: followups.__setitem__(slice(None), simulator.respond(conversations, profile)), repeats), None)
    batch = [Interaction(i, p, m, c, a, f) for i, (p, m, c, a, f) in enumerate(zip(texts, messages, contexts, answers, followups))]
    trainer = SDPOTrainer(policy, config.trainer)
    completions = [list(a.token_ids) for a in answers]
    hindsight = [policy.encode_chat(trainer.hindsight_messages(i, i.followup.text)) for i in batch]
    neutral = [policy.encode_chat(trainer.hindsight_messages(i, trainer.neutral_followup(i))) for i in batch]

    def teacher() -> None:
        with torch.no_grad():
            policy.score(hindsight, completions)
            policy.score(neutral, completions)

    teacher_s = best(teacher, repeats)
    teacher_floor = floor.scoring(hindsight, completions) + floor.scoring(neutral, completions)
    record("teacher forward (hindsight + neutral)", teacher_s, teacher_floor)
    step_s = best(lambda: trainer.step(batch), repeats)  # moves the weights: timed after everything that generates from them
    student_floor = floor.student(contexts, completions)
    record("student forward/backward/update", step_s - teacher_s, student_floor, "trainer step minus teacher forward")
    record("trainer step (teacher + student)", step_s, teacher_floor + student_floor)

    # one evaluation: greedy answers to the held-out prompts in one batch, judged by the profile's rules
    eval_ctx = heldout[:eval_prompts]
    eval_engine = HFEngine(policy, batch_size=config.eval.batch_size)
    eval_params = SamplingParams(max_new_tokens=config.eval.max_new_tokens if not args.quick else 48, temperature=0.0)
    eval_answers: list[Generation] = []
    seconds = best(lambda: eval_answers.__setitem__(slice(None), eval_engine.generate(eval_ctx, eval_params)), 1)
    record(f"evaluation generate ({len(eval_ctx)} prompts, greedy, {max(len(a.token_ids) for a in eval_answers)} tokens max)",
           seconds, floor.generation(eval_ctx, eval_answers, eval_engine.batch_size))
    if args.compare:
        old_eval = HFEngine(policy, batch_size=config.eval.batch_size, impl="hf")
        start = time.perf_counter()
        old_answers = old_eval.generate(eval_ctx, eval_params)
        record(f"evaluation generate ({len(eval_ctx)} prompts, greedy) (hf)", time.perf_counter() - start,
               floor.generation(eval_ctx, old_answers, old_eval.batch_size), "answers equal" if old_answers == eval_answers else "answers DIFFER")
        aten = HFEngine(policy, batch_size=config.eval.batch_size, linear="aten")
        start = time.perf_counter()
        aten_answers = aten.generate(eval_ctx, eval_params)
        record(f"evaluation generate ({len(eval_ctx)} prompts, greedy) (fast, aten linears)", time.perf_counter() - start,
               floor.generation(eval_ctx, aten_answers, aten.batch_size),
               f"{sum(a == b for a, b in zip(aten_answers, old_answers))}/{len(old_answers)} answers equal hf's")
    judge = RuleJudge(profile)
    pairs = [Pair(p, a.text, b.text) for p, a, b in zip(prompts.heldout, eval_answers, eval_answers[1:] + eval_answers[:1])]
    record(f"rules judge ({len(pairs)} pairs)", best(lambda: judge.compare(pairs), repeats), None)

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s)"
    print(f"\n## floor — {machine}; load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"read bandwidth {floor.bandwidth / 1e9:.1f} GB/s, fp32 GEMM {floor.gemm / 1e9:.0f} GFLOP/s, weights {floor.weight_bytes / 1e6:.0f} MB\n")
    print(memory_line() + "\n")
    print("| part | seconds | floor | ratio | note |\n|---|---|---|---|---|")
    for r in rows:
        floor_s = "—" if r["floor"] is None else f"{r['floor']:.4f}"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        print(f"| {r['part']} | {r['seconds']:.4f} | {floor_s} | {ratio} | {r['note']} |")
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "bandwidth_gbs": floor.bandwidth / 1e9,
                      "gemm_gflops": floor.gemm / 1e9, "args": vars(args)}))


if __name__ == "__main__":
    main()
