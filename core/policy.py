"""The policy: a causal LM plus its tokenizer, chat rendering, and log-probs of given completions.

Log-probs are computed only at completion positions: the decoder runs over context + completion, the hidden
states of the completion positions are gathered, and only those go through the LM head. Full-sequence ×
vocabulary logits are never materialised.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from core.models import DEFAULT_MODEL, resolve_model
from core.runtime import DeviceName, default_dtype, resolve_device

Message = dict[str, str]
Kernels = Literal["auto", "aten", "onednn"]


class LoraSettings(BaseModel):
    """LoRA adapter on every linear layer of the decoder (peft)."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)


class PolicySettings(BaseModel):
    """Which model to load and how."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(DEFAULT_MODEL, description="embedded alias, .gguf file, model folder or hub id")
    device: DeviceName = "auto"
    system_prompt: str | None = Field(None, description="None keeps the chat template's own default")
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False
    trust_remote_code: bool = Field(False, description="run Python code shipped with a hub model (dangerous: only for models you trust)")
    kernels: Kernels = Field("auto", description="generation's linear layers: 'onednn' (prepacked oneDNN GEMM, ~1.5x faster decoding at a "
                             "few rows; CPU only), 'aten' (PyTorch's default GEMM, which the records before oneDNN "
                             "were made with), 'auto' (onednn on the CPU where PyTorch has it, else aten)")


@dataclass
class Scored:
    """Per-token results for a batch of completions, right-padded to the longest one."""

    logprobs: torch.Tensor  # [B, T]; zero where mask is False
    mask: torch.Tensor  # [B, T] bool
    logits: torch.Tensor | None = None  # [B, T, V] when asked for


@dataclass
class Packed:
    """A batch of (context, completion) rows ready for ``CompletionScorer``."""

    ids: torch.Tensor  # [B, L] context + completion[:-1], right-padded
    attn: torch.Tensor  # [B, L]
    where: torch.Tensor  # [B, T] position whose hidden state predicts completion token t
    mask: torch.Tensor  # [B, T] bool
    targets: torch.Tensor  # [B, T] completion token ids


class CompletionScorer(torch.nn.Module):
    """The model's forward restricted to completion positions: the decoder over each row, the LM head only where a
    completion token is predicted. A module, so a distributed wrapper can own its forward (and sync its gradients)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, attn: torch.Tensor, where: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.get_decoder()(input_ids=ids, attention_mask=attn).last_hidden_state
        picked = hidden.gather(1, where.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))
        logits = self.model.get_output_embeddings()(picked).float()
        logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return logprobs.masked_fill(~mask, 0.0), logits


class Policy:
    """A trainable chat model. ``score`` is differentiable unless called under ``torch.no_grad``."""

    def __init__(self, model, tokenizer, settings: PolicySettings):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = next(model.parameters()).device
        self.eos_token_id: int = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        self._frozen: Policy | None = None

    @classmethod
    def load(cls, settings: PolicySettings) -> Policy:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = resolve_model(settings.model)
        device = resolve_device(settings.device)
        adapter = isinstance(source, Path) and (source / "adapter_config.json").is_file()
        kwargs = {"trust_remote_code": settings.trust_remote_code}
        if adapter:
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(source, dtype=default_dtype(device), is_trainable=True, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=default_dtype(device), use_safetensors=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model.to(device)
        if settings.lora is not None and not adapter:
            from peft import LoraConfig, get_peft_model

            lora = settings.lora
            model = get_peft_model(
                model,
                LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules="all-linear", task_type="CAUSAL_LM"),
            )
        if settings.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        return cls(model, tokenizer, settings)

    @property
    def uses_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    # ----- text <-> tokens -------------------------------------------------------------------------
    def messages(self, prompt: str, system: str | None = None) -> list[Message]:
        """A single-turn chat; ``system`` overrides the configured system prompt."""
        system = system if system is not None else self.settings.system_prompt
        head = [{"role": "system", "content": system}] if system else []
        return head + [{"role": "user", "content": prompt}]

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of a chat ending with the assistant header (ready for the completion)."""
        ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()

    # ----- scoring ---------------------------------------------------------------------------------
    def pack(self, contexts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> Packed:
        """Context + completion rows, right-padded, with the hidden-state index that predicts each completion token."""
        if len(contexts) != len(completions):
            raise ValueError("contexts and completions differ in length")
        lengths = [len(c) for c in completions]
        if min(lengths) < 1:
            raise ValueError("every completion needs at least one token")
        rows = [list(c) + list(y[:-1]) for c, y in zip(contexts, completions)]
        width, steps = max(map(len, rows)), max(lengths)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        # index of the hidden state that predicts completion token t, per row (0 where padded)
        where = torch.zeros((len(rows), steps), dtype=torch.long)
        mask = torch.zeros((len(rows), steps), dtype=torch.bool)
        targets = torch.full((len(rows), steps), self.pad_token_id, dtype=torch.long)
        for i, (row, ctx, y) in enumerate(zip(rows, contexts, completions)):
            ids[i, : len(row)] = torch.tensor(row)
            attn[i, : len(row)] = 1
            where[i, : len(y)] = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(y))
            mask[i, : len(y)] = True
            targets[i, : len(y)] = torch.tensor(list(y))
        return Packed(*(t.to(self.device) for t in (ids, attn, where, mask, targets)))

    def score(self, contexts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, full_logits: bool = False,
              scorer: torch.nn.Module | None = None) -> Scored:
        """Log-probs of each completion token given its context (and the logits there, if asked).

        ``scorer`` is a ``CompletionScorer`` of this policy's model, possibly wrapped by a distributed engine (DDP, FSDP,
        DeepSpeed through accelerate) so that its forward, hooks and gradient sync run; by default the bare model."""
        packed = self.pack(contexts, completions)
        logprobs, logits = (scorer or CompletionScorer(self.model))(packed.ids, packed.attn, packed.where, packed.targets, packed.mask)
        return Scored(logprobs=logprobs, mask=packed.mask, logits=logits if full_logits else None)

    # ----- the initial policy ----------------------------------------------------------------------
    def snapshot_initial(self) -> None:
        """Keep a frozen copy of the weights as they are now, as the reference for ``initial()``.

        Call it before the first update (a no-op under LoRA, where switching the adapter off is the reference).
        """
        if not self.uses_adapter and self._frozen is None:
            # the weights file's pages where they are the model's weights now: the arm processes of a run then share one
            # copy of the frozen model through the page cache instead of each holding its own
            memo = _mapped_parameters(self.model)
            frozen = copy.deepcopy(self.model, memo).eval()
            frozen.requires_grad_(False)
            self._frozen = Policy(frozen, self.tokenizer, self.settings)

    @contextlib.contextmanager
    def initial(self) -> Iterator[Policy]:
        """The untrained policy, for KL anchors and evaluation: the adapter switched off, or the snapshot."""
        if self.uses_adapter:
            with self.model.disable_adapter():
                yield self
            return
        if self._frozen is None:
            raise RuntimeError("no initial policy: call snapshot_initial() before the first update")
        yield self._frozen

    def save(self, folder: Path) -> None:
        """Safetensors checkpoint (adapter only under LoRA) with the tokenizer."""
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)


def _mapped_parameters(model: torch.nn.Module) -> dict[int, torch.nn.Parameter]:
    """A ``copy.deepcopy`` memo that gives each of ``model``'s parameters a frozen twin backed by the safetensors file the
    model was loaded from, mapped copy-on-write (never written, so every process mapping the file shares its pages).
    Empty (deepcopy copies everything) unless the model is on the CPU, came from one local safetensors file holding every
    parameter in its dtype, and its weights still equal the file's (not yet trained, not a resumed checkpoint)."""
    import json
    import mmap
    import struct

    files = list(Path(str(getattr(model, "name_or_path", ""))).glob("*.safetensors"))
    params = dict(model.named_parameters())
    if len(files) != 1 or any(p.device.type != "cpu" for p in params.values()):
        return {}
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    with open(files[0], "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    memo: dict[int, torch.nn.Parameter] = {}
    for name, param in params.items():
        entry = header.get(name)
        if entry is None or dtypes.get(entry["dtype"]) != param.dtype or list(entry["shape"]) != list(param.shape):
            return {}
        start, end = (8 + size + offset for offset in entry["data_offsets"])
        mapped = torch.frombuffer(buffer, dtype=param.dtype, count=(end - start) // param.element_size(), offset=start).view(param.shape)
        if not torch.equal(mapped, param.detach()):
            return {}
        memo[id(param)] = torch.nn.Parameter(mapped, requires_grad=False)
    return memo
