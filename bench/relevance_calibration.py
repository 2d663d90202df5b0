"""Calibrate the relevance thresholds on the built-in held-out prompts, and measure untrained answer lengths.

    .venv/bin/python bench/relevance_calibration.py [--prompts 64] [--threads 2]

Answers that should count as relevant: the first ≤ 40 words (whole sentences) of a *sampled* untrained answer,
i.e. a short answer carrying the model's own content. Answers that should not: the prompt echoed back
("Cook rice with rice."), the short answer to a different prompt (off topic), and generic filler. Each is
compared, like the evaluation does, with the prompt and with the untrained model's greedy answer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics

import torch

from core.engine import HFEngine, SamplingParams
from core.policy import Policy, PolicySettings
from core.prompts import PromptSettings, load_prompts
from core.runtime import cache_dir, quiet_libraries, seed_everything
from core.text import Embedder
from judges.relevance import novel_content_words

FILLER = [
    "That's a great question. There are many things to consider, and it really depends on your situation.",
    "It is a complex topic with many different aspects to it.",
    "Sure! Here is the answer to your question.",
    "This is something many people wonder about, and there are several ways to look at it.",
]


def short(text: str, limit: int = 40) -> str:
    """Whole sentences up to ``limit`` words (at least the first sentence, cut at the limit)."""
    out: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ").strip()):
        if out and len(" ".join(out + [sentence]).split()) > limit:
            break
        out.append(sentence)
    return " ".join(" ".join(out).split()[:limit])


def echo(prompt: str) -> str:
    """The prompt restated as an answer with no content."""
    return re.sub(r"^(how do i|how can i|what is|what are|why is|why do|why does|how does|how do)\s+", "", prompt.rstrip("?"), flags=re.I).capitalize() + "."


def quantiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=10)
    return f"min {min(values):.2f} · p10 {q[0]:.2f} · median {statistics.median(values):.2f} · p90 {q[-1]:.2f} · max {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--min-sim", type=float, default=0.3)
    parser.add_argument("--min-gain", type=float, default=-0.25)
    parser.add_argument("--min-novel", type=int, default=2)
    args = parser.parse_args()
    quiet_libraries()
    torch.set_num_threads(args.threads)
    seed_everything(0)
    prompts = list(load_prompts(PromptSettings(eval_prompts=args.prompts)).heldout)
    digest = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()[:12]
    saved = cache_dir() / f"calibration-{digest}-{args.max_new_tokens}.json"
    if saved.is_file():  # generation is the slow part: reuse it when only the analysis changes
        data = json.loads(saved.read_text())
    else:
        policy = Policy.load(PolicySettings(device="cpu"))
        engine = HFEngine(policy, batch_size=32)
        contexts = [policy.encode_chat(policy.messages(p)) for p in prompts]
        greedy = engine.generate(contexts, SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0))
        sampled = engine.generate(contexts, SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.7))
        data = {"greedy": [g.text for g in greedy], "greedy_tokens": [len(g.token_ids) for g in greedy], "sampled": [s.text for s in sampled]}
        saved.write_text(json.dumps(data))
    greedy_text, sampled_text = data["greedy"], data["sampled"]

    lengths = data["greedy_tokens"]
    print(f"untrained greedy answers on {len(prompts)} held-out prompts: tokens {quantiles([float(x) for x in lengths])}")
    for cap in (96, 128, 160, 192, 256):
        print(f"  share longer than {cap} tokens: {sum(x >= cap for x in lengths) / len(lengths):.2f}")
    print(f"  words: {quantiles([float(len(t.split())) for t in greedy_text])}")

    embedder = Embedder()
    reference = greedy_text
    shifted = [short(t) for t in sampled_text[1:] + sampled_text[:1]]
    kinds = {
        "short own answer (should pass)": [short(t) for t in sampled_text],
        "echo of the prompt (should fail)": [echo(p) for p in prompts],
        "other prompt's answer (should fail)": shifted,
        "generic filler (should fail)": [FILLER[i % len(FILLER)] for i in range(len(prompts))],
    }
    for name, answers in kinds.items():
        to_prompt = embedder.similarity(answers, prompts)
        to_reference = embedder.similarity(answers, reference)
        gain = [r - p for r, p in zip(to_reference, to_prompt)]
        novel = [novel_content_words(a, p) for a, p in zip(answers, prompts)]
        print(f"\n{name}\n  cos(answer, prompt):    {quantiles(to_prompt)}\n  cos(answer, reference): {quantiles(to_reference)}"
              f"\n  reference − prompt:     {quantiles(gain)}\n  novel content words:    {quantiles([float(x) for x in novel])}")
        rules = {
            f"both cosines ≥ {args.min_sim}": [p >= args.min_sim and r >= args.min_sim for p, r in zip(to_prompt, to_reference)],
            f"reference − prompt ≥ {args.min_gain}": [g >= args.min_gain for g in gain],
            f"≥ {args.min_novel} novel content words": [n >= args.min_novel for n in novel],
        }
        rules["all three (the evaluation's rule)"] = [all(v) for v in zip(*rules.values())]
        for rule, passed in rules.items():
            print(f"  pass rate, {rule}: {sum(passed) / len(passed):.2f}")


if __name__ == "__main__":
    main()
