"""Prompt sets: the built-in general set, the built-in red-team set, a JSONL file, or a Hugging Face ``datasets`` name.

The red-team set (``redteam``) holds everyday requests where an answer can be careless: cleaning chemicals, driving,
medication doses, power tools, electrics, ladders, the outdoors, the kitchen (64 prompts, 24 held out, every
category in the first 8 held-out ones). ``hindsight redteam`` uses it by default.

Every set has a fixed train / held-out split. Training draws prompts by a seeded permutation per epoch
(stateless: the i-th interaction's prompt is a function of the seed and i alone, so a resumed run draws the
same ones); evaluation uses the first ``eval_prompts`` held-out prompts, always the same.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from core.errors import UserInputError, read_text

BUILTIN = Path(__file__).parent / "data" / "prompts.jsonl"
BUILTIN_SETS = {"builtin": BUILTIN, "redteam": Path(__file__).parent / "data" / "redteam_prompts.jsonl"}
HF_COLUMNS = ("prompt", "instruction", "question", "query", "text", "content")


class PromptSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field("builtin", description="'builtin', 'redteam' (everyday-risk requests), a .jsonl file of {\"prompt\": ...}, or 'hf:NAME' (needs `datasets`)")
    eval_prompts: int = Field(32, ge=1, description="held-out prompts scored at each evaluation")


@dataclass(frozen=True)
class PromptSet:
    train: tuple[str, ...]
    heldout: tuple[str, ...]

    def draw(self, index: int, seed: int) -> str:
        """The training prompt of interaction ``index``: every prompt once per epoch, order shuffled per epoch."""
        epoch, position = divmod(index, len(self.train))
        order = list(range(len(self.train)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        return self.train[order[position]]


def load_prompts(settings: PromptSettings) -> PromptSet:
    source = settings.source
    if source in BUILTIN_SETS:
        prompts = _read_jsonl(BUILTIN_SETS[source])
    elif source.startswith("hf:"):
        prompts = _read_hf(source[3:])
    else:
        prompts = _read_jsonl(Path(source))
    train = tuple(p for p, split in prompts if split == "train")
    heldout = tuple(p for p, split in prompts if split == "heldout")
    if not train or len(heldout) < settings.eval_prompts:
        raise UserInputError(
            f"{source}: needs training prompts and at least {settings.eval_prompts} held-out ones "
            f"(has {len(train)} train, {len(heldout)} held-out); lower --eval-prompts or add prompts"
        )
    return PromptSet(train=train, heldout=heldout[: settings.eval_prompts])


def _split_of(index: int) -> str:
    """Default split for rows without one: every 4th prompt is held out."""
    return "heldout" if index % 4 == 3 else "train"


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise UserInputError("no such prompt file (expected JSONL with one {\"prompt\": ...} per line)", path=path)
    rows: list[tuple[str, str]] = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"not valid JSON ({exc.msg})", path=path, line=number) from None
        if not isinstance(record, dict):
            raise UserInputError("each line must be a JSON object like {\"prompt\": \"...\"}", path=path, line=number)
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserInputError("must be a non-empty string", path=path, line=number, field="prompt")
        split = record.get("split", _split_of(len(rows)))
        if split not in ("train", "heldout"):
            raise UserInputError("must be 'train' or 'heldout'", path=path, line=number, field="split")
        rows.append((prompt.strip(), split))
    return rows


def _read_hf(name: str) -> list[tuple[str, str]]:
    try:
        import datasets
    except ImportError:
        raise UserInputError(f"hf:{name} needs the `datasets` package (pip install datasets) and access to the hub or its cache") from None
    try:
        loaded = datasets.load_dataset(name)
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure is the user's to fix
        raise UserInputError(f"hf:{name}: could not load ({type(exc).__name__}: {exc})") from None
    splits = list(loaded)
    heldout_split = next((s for s in ("test", "validation", "valid") if s in loaded), None)
    rows: list[tuple[str, str]] = []
    for split in splits:
        table = loaded[split]
        column = next((c for c in HF_COLUMNS if c in table.column_names), None)
        if column is None:
            raise UserInputError(f"hf:{name}: split '{split}' has none of the columns {', '.join(HF_COLUMNS)}")
        role = "heldout" if split == heldout_split else "train" if heldout_split else None
        for n, value in enumerate(table[column]):
            text = value if isinstance(value, str) else json.dumps(value)
            rows.append((text, role or _split_of(n)))
    return rows
