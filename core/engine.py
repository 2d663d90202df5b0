"""Generation behind one small protocol, so a vLLM engine can replace the HF one without touching the loop."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from core.runtime import cache_dir

if TYPE_CHECKING:
    from core.policy import Policy


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 192
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class Generation:
    """One completion: its text, its exact token ids (EOS included when emitted) and whether it ended on EOS."""

    text: str
    token_ids: tuple[int, ...]
    finished: bool


class Engine(Protocol):
    """Turns rendered contexts (token ids) into completions with the policy's current weights."""

    def generate(self, contexts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]: ...


class HFEngine:
    """Batched generation with the policy's own transformers model (left padding, KV cache)."""

    def __init__(self, policy: Policy, batch_size: int = 16):
        self.policy = policy
        self.batch_size = batch_size

    @torch.inference_mode()
    def generate(self, contexts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(contexts), self.batch_size):
            out.extend(self._generate_batch(contexts[start : start + self.batch_size], params))
        return out

    def _generate_batch(self, contexts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        policy = self.policy
        pad = policy.pad_token_id
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, ctx in enumerate(contexts):
            ids[row, width - len(ctx) :] = torch.tensor(ctx, dtype=torch.long)
            mask[row, width - len(ctx) :] = 1
        greedy = params.temperature <= 0
        was_training = policy.model.training
        policy.model.eval()
        sampled = policy.model.generate(
            input_ids=ids.to(policy.device),
            attention_mask=mask.to(policy.device),
            max_new_tokens=params.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None,
            pad_token_id=pad,
            eos_token_id=policy.eos_token_id,
        )
        policy.model.train(was_training)
        results = []
        for row in sampled[:, width:].tolist():
            finished = policy.eos_token_id in row
            tokens = row[: row.index(policy.eos_token_id) + 1] if finished else row
            results.append(Generation(text=policy.decode(tokens), token_ids=tuple(tokens), finished=finished))
        return results


def cached_generate(policy: Policy, engine: Engine, contexts: list[list[int]], params: SamplingParams) -> list[Generation]:
    """Greedy answers of an untrained model, cached on disk: same weights file, contexts and settings → same answers."""
    import transformers

    source = str(policy.model.name_or_path)
    stamp = [f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in sorted(Path(source).glob("*.safetensors"))]
    key = json.dumps([source, stamp, contexts, params.max_new_tokens, getattr(engine, "batch_size", None), str(policy.device),
                      str(policy.model.dtype), torch.__version__, transformers.__version__])
    path = cache_dir() / "answers" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
    if path.is_file():
        return [Generation(a["text"], tuple(a["token_ids"]), a["finished"]) for a in json.loads(path.read_text())]
    answers = engine.generate(contexts, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"text": a.text, "token_ids": list(a.token_ids), "finished": a.finished} for a in answers]))
    tmp.replace(path)
    return answers
