"""What did a run's follow-ups say about one kind of token? The recorded per-token advantage, split by block and follow-up.

    .venv/bin/python bench/token_advantage.py results/flip-first_person --tokens first_person --blocks 64
    .venv/bin/python bench/token_advantage.py results/RUN --tokens eos --blocks 32,64

Reads a run's signals.jsonl (every trained answer's tokens and their advantage A_t) and interactions.jsonl (the user's
verdict on it) and prints, per arm, seed and block of interactions, and for complaints and satisfied follow-ups apart:
the answers, how many of their tokens match ``--tokens``, and the mean A_t on those tokens and on all others. A pattern
the user asks to remove ("drop the first person") should get a clearly negative mean on its tokens after the request;
one near zero means the teacher did not read the follow-up as being about them, and no loss or step size can learn what
the advantage does not hold. No model is loaded; seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from core.records import InteractionRecord, read_jsonl

PATTERNS = {
    "first_person": r"(?i)^\s*(?:i|me|my|mine|myself|i'm|i'd|i've|i'll)$",
    "eos": r"^<\|im_end\|>$",
    "emoji": "[\U0001F300-\U0001FAFF\u2600-\u27BF]",
    "exclamation": r"!",
}


def rows(run: Path, pattern: re.Pattern[str], blocks: list[int], arm: str | None) -> list[dict]:
    """One row per (arm, seed, block, verdict) with answers, matched tokens and the two mean advantages."""
    verdicts = {(r.arm, r.seed, r.index): r.satisfied for r in read_jsonl(run / "interactions.jsonl", InteractionRecord)}
    groups: dict[tuple, tuple[list[float], list[float], set[int]]] = {}
    for line in (run / "signals.jsonl").read_text(encoding="utf-8").splitlines():
        signal = json.loads(line)
        if arm is not None and signal["arm"] != arm:
            continue
        satisfied = verdicts.get((signal["arm"], signal["seed"], signal["index"]))
        block = sum(signal["index"] >= b for b in blocks)
        kind = "satisfied" if satisfied else "complaint" if satisfied is False else "unknown"
        matched, other, answers = groups.setdefault((signal["arm"], signal["seed"], block, kind), ([], [], set()))
        answers.add(signal["index"])
        for token, advantage in zip(signal["tokens"], signal["advantage"]):
            (matched if pattern.search(token) else other).append(advantage)
    edges = [0, *blocks]
    out = []
    for (arm_, seed, block, kind), (matched, other, answers) in sorted(groups.items()):
        span = f"{edges[block]}–" + (str(blocks[block]) if block < len(blocks) else "end")
        out.append({"arm": arm_, "seed": seed, "interactions": span, "follow-up": kind, "answers": len(answers), "tokens": len(matched),
                    "A(tokens)": statistics.mean(matched) if matched else None, "A(other)": statistics.mean(other) if other else None})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (with signals.jsonl and interactions.jsonl)")
    parser.add_argument("--tokens", default="first_person", help=f"a named pattern ({', '.join(PATTERNS)}) or a regex on one token's text")
    parser.add_argument("--blocks", default="", help="comma-separated interaction counts where a block ends, e.g. the flip: 64")
    parser.add_argument("--arm", default="treated", help="treated, control, … or 'all' (default: treated)")
    args = parser.parse_args()
    pattern = re.compile(PATTERNS.get(args.tokens, args.tokens))
    blocks = [int(b) for b in args.blocks.split(",") if b]
    table = rows(args.run, pattern, blocks, None if args.arm == "all" else args.arm)
    print(f"`{args.tokens}` tokens in {args.run.name}: mean advantage A_t on them and on the rest\n")
    print("| arm | seed | interactions | follow-up | answers | matching tokens | A_t on them | A_t on the rest |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        fmt = lambda v: "–" if v is None else f"{v:+.3f}"  # noqa: E731
        print(f"| {r['arm']} | {r['seed']} | {r['interactions']} | {r['follow-up']} | {r['answers']} | {r['tokens']} | {fmt(r['A(tokens)'])} | {fmt(r['A(other)'])} |")
    print(json.dumps({"run": str(args.run), "tokens": args.tokens, "rows": table}))


if __name__ == "__main__":
    main()
