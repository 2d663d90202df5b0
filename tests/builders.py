"""Test data shared by several test files: an interaction built from a fixed answer, the policy's weights as one vector, synthetic
evaluation records and run folders."""

from __future__ import annotations

from pathlib import Path

import torch

from core.engine import Generation
from core.interaction import Followup, Interaction
from core.records import EvalRecord


def make_interaction(policy, prompt: str, answer: str, followup: str) -> Interaction:
    messages = policy.messages(prompt)
    tokens = tuple(policy.tokenizer.encode(answer, add_special_tokens=False) + [policy.eos_token_id])
    return Interaction(0, prompt, messages, policy.encode_chat(messages), Generation(answer, tokens, True), Followup(followup, followup))


def weights(policy) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in policy.model.parameters()]).clone()


ANSWER = "Rice is a grain. Rinse it, add two cups of water per cup of rice, boil, then simmer covered for eighteen minutes."


EVAL_BASE = dict(n=20, compliance=0.5, clean=0.5, degenerate=0.1, relevant=0.9, mean_words=50.0, apology=0.0, meta=0.0, looping=0.0, empty=0.0,
                 truncated=0.0, repetition=0.0, distinct2=1.0, prompt_similarity=0.5, reference_similarity=0.5, kl=0.0, seconds=1.0)


def eval_record(arm: str, x: int, seed: int = 0, profile: str | None = None, **fields) -> EvalRecord:
    """A synthetic evaluation record: EVAL_BASE with ``fields`` replaced."""
    return EvalRecord(arm=arm, seed=seed, interactions=x, profile=profile, **{**EVAL_BASE, **fields})  # type: ignore[arg-type]


def write_run(folder: Path, config: str, records: list[EvalRecord]) -> Path:
    """A run folder holding only ``config.yaml`` (YAML text; the rest defaults) and ``metrics.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(config, encoding="utf-8")
    (folder / "metrics.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    return folder
