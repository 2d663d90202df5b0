"""Generation behind one small protocol, so a vLLM engine can replace the HF one without touching the loop."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

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
    """Batched generation with the policy's own transformers model (left padding, KV cache).

    ``impl="fast"`` runs its own decode loop over the model's forward; ``impl="hf"`` calls transformers' ``generate``;
    ``impl="auto"`` (the default) uses the fast loop for greedy decoding, and for sampling too when the linear layers run
    oneDNN (the CPU default); with ``linear="aten"`` it samples with ``generate``, whose random stream the records made
    before oneDNN follow (the fast loop draws from the same distribution, but once a row finishes its draws no longer
    line up with generate's). Both decode the same way (greedy: the same token ids; sampling: temperature then top-p
    exactly as transformers applies them, then one multinomial draw); the fast loop skips generate's per-step
    machinery, keeps only the last position's logits and drops finished rows from the batch and its KV cache.
    """

    def __init__(self, policy: Policy, batch_size: int = 16, impl: Literal["auto", "fast", "hf"] = "auto",
                 linear: Literal["auto", "aten", "onednn"] | None = None):
        if impl not in ("auto", "fast", "hf"):
            raise ValueError(f"unknown engine impl {impl!r}: 'auto', 'fast' or 'hf'")
        linear = linear or policy.settings.kernels
        cpu = policy.device.type == "cpu" and torch.backends.mkldnn.is_available()
        if linear == "auto":
            linear = "onednn" if cpu and impl != "hf" else "aten"
        if linear not in ("aten", "onednn") or (linear == "onednn" and (impl == "hf" or not cpu)):
            raise ValueError(f"linear={linear!r}: 'auto', 'aten', or 'onednn' with impl='fast' on the CPU")
        self.policy = policy
        self.batch_size = batch_size
        self.impl = impl
        # "onednn" (the default on the CPU; ``policy.kernels``): the model's linear layers run oneDNN's prepacked fp32 GEMM
        # during generation, ~1.5x faster than MKL's at a few rows; its sums round differently, so an answer can differ from
        # "aten"'s where two tokens are within rounding of each other (bench/greedy_equality.py counts them)
        self.linear = linear
        self.step_times: list[float] | None = None  # when a list, each prefill and decode step appends its end time

    @torch.inference_mode()
    def generate(self, contexts: Sequence[Sequence[int]], params: SamplingParams, *, on_token: OnToken | None = None,
                 adapters: Sequence[str] | None = None) -> list[Generation]:
        """Completions of ``contexts``, ``batch_size`` rows at a time. Step-wise hooks (they run the fast loop, whatever
        ``impl``): ``on_token(i, token)`` sees each new token of context ``i`` as it is picked, and returning False ends
        that row there, unfinished (a server streams and cancels through it); ``adapters`` names, per context, the peft
        adapter its row decodes with ("__base__": none), so rows of different adapters share one batch."""
        out: list[Generation] = []
        for start in range(0, len(contexts), self.batch_size):
            end = start + self.batch_size
            hook = None if on_token is None else functools.partial(_shifted, on_token, start)
            out.extend(self._generate_batch(contexts[start:end], params, hook, None if adapters is None else adapters[start:end]))
        return out

    def _generate_batch(self, contexts: Sequence[Sequence[int]], params: SamplingParams, on_token: OnToken | None = None,
                        adapters: Sequence[str] | None = None) -> list[Generation]:
        if on_token is not None or adapters is not None:
            return self._fast_batch(contexts, params, on_token, adapters)
        if self.impl == "fast" or (self.impl == "auto" and (params.temperature <= 0 or self.linear == "onednn")):
            return self._fast_batch(contexts, params)
        return self._hf_batch(contexts, params)

    def _fast_batch(self, contexts: Sequence[Sequence[int]], params: SamplingParams, on_token: OnToken | None = None,
                    adapters: Sequence[str] | None = None) -> list[Generation]:
        policy = self.policy
        model, device, eos = policy.model, policy.device, policy.eos_token_id
        ids, mask = _left_pad(contexts, policy.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        # the positions transformers' generate gives left-padded rows
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        greedy = params.temperature <= 0
        tokens: list[list[int]] = [[] for _ in contexts]
        rows: list[int | None] = list(range(len(contexts)))  # row of the running batch -> its context, None once finished
        names = list(adapters) if adapters is not None else None  # row of the running batch -> its adapter
        was_training = model.training
        model.eval()
        kernels = contextlib.ExitStack()
        if self.linear == "onednn":
            kernels.enter_context(_onednn_linears(model, len(contexts)))
        try:
            cache, logits = self._prefill(ids, mask, positions, [len(c) for c in contexts], params.max_new_tokens, names)
            self._tick()
            for step in range(params.max_new_tokens):
                nxt = _pick(logits, params, greedy)
                finished = False
                for row, tok in enumerate(nxt.tolist()):
                    if (index := rows[row]) is not None:
                        tokens[index].append(tok)
                        if (on_token is not None and not on_token(index, tok)) or tok == eos:
                            rows[row], finished = None, True
                running = sum(r is not None for r in rows)
                if step + 1 == params.max_new_tokens or running == 0:
                    break
                keep = _keep(rows, running) if finished else None
                if keep is not None:  # finished rows leave the batch and the cache
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    mask, positions, nxt = mask[index], positions[index], nxt[index]
                    rows = [rows[r] for r in keep]
                    names = [names[r] for r in keep] if names is not None else None
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
                positions = positions[:, -1:] + 1
                out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1,
                            **_adapter_kwargs(names))
                logits = out.logits[:, -1].float()
                self._tick()
        finally:
            kernels.close()
            model.train(was_training)
        return [Generation(text=policy.decode(t), token_ids=tuple(t), finished=bool(t) and t[-1] == eos) for t in tokens]

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, lengths: list[int], new_tokens: int,
                 adapters: list[str] | None = None):
        """Run the contexts, in groups of similar length so short rows are not padded to the longest one, into one
        preallocated KV cache laid out as the left-padded batch (padding slots zero and masked). Returns the cache and
        the last position's logits (float32) per row."""
        from transformers import DynamicCache

        model, width = self.policy.model, ids.shape[1]
        cache = DynamicCache(config=model.config)
        cache.layers = [_growing_layer()(width + new_tokens) for _ in cache.layers]
        logits = None
        for group in _length_groups(lengths):
            index = torch.tensor(group, device=ids.device)
            w = max(lengths[r] for r in group)
            part = DynamicCache(config=model.config)
            out = model(input_ids=ids[index, -w:], attention_mask=mask[index, -w:], position_ids=positions[index, -w:], cache=part,
                        use_cache=True, logits_to_keep=1, **_adapter_kwargs(None if adapters is None else [adapters[r] for r in group]))
            for layer, src in zip(cache.layers, part.layers):
                layer.place(index, src.keys, src.values, len(lengths), width)
            last = out.logits[:, -1].float()
            if logits is None:
                logits = last.new_empty((len(lengths), last.shape[-1]))
            logits[index] = last
        return cache, logits

    def _tick(self) -> None:
        if self.step_times is not None:
            self.step_times.append(time.perf_counter())

    def _hf_batch(self, contexts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        policy = self.policy
        pad = policy.pad_token_id
        width = max(len(c) for c in contexts)
        ids, mask = _left_pad(contexts, pad)
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
            **({"logits_processor": [_Ticker(self._tick)]} if self.step_times is not None else {}),
        )
        policy.model.train(was_training)
        results = []
        for row in sampled[:, width:].tolist():
            finished = policy.eos_token_id in row
            tokens = row[: row.index(policy.eos_token_id) + 1] if finished else row
            results.append(Generation(text=policy.decode(tokens), token_ids=tuple(tokens), finished=finished))
        return results


OnToken = Callable[[int, int], bool]


def _shifted(on_token: OnToken, offset: int, index: int, token: int) -> bool:
    return on_token(offset + index, token)


def _adapter_kwargs(names: list[str] | None) -> dict:
    """peft's mixed-adapter batch argument, when rows name their adapters."""
    return {} if names is None else {"adapter_names": names}


class _Ticker:
    """A logits processor that changes nothing and records when each of generate's steps reached it."""

    def __init__(self, tick):
        self.tick = tick

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.tick()
        return scores


# Decode batch sizes that cost more than a larger one: MKL's fp32 GEMM over all the model's weights at M rows, one
# thread, measured on the development machine (ms): M=1 48, 2 83, 3 102, 4 66, 5 75, 8 77, 16 98, 32 142.
_SLOW_BATCHES = {2: 4, 3: 4}


def _keep(rows: Sequence[int | None], running: int) -> list[int] | None:
    """Batch rows to keep once some rows finished: the running ones, plus finished ones (decoded, their tokens
    dropped) where a batch of only the running rows would be slower; None to keep the batch as it is."""
    size = min(_SLOW_BATCHES.get(running, running), len(rows))
    if size == len(rows):
        return None
    live = [r for r, c in enumerate(rows) if c is not None]
    spare = [r for r, c in enumerate(rows) if c is None][: size - running]
    return sorted(live + spare)


@contextlib.contextmanager
def _onednn_linears(model: torch.nn.Module, rows: int):
    """Every nn.Linear of ``model`` (LoRA's base layers and the tied LM head included) computes with its weight
    prepacked for oneDNN, for the duration; packing happens here, so the weights as they are now are the ones used."""
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    op = torch.ops.mkldnn

    def packed_forward(module: torch.nn.Linear, weight: torch.Tensor):
        def forward(x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1])
            out = op._linear_pointwise(flat, weight, module.bias, "none", [], "")
            return out.reshape(*x.shape[:-1], out.shape[-1])
        return forward

    try:
        for m in linears:
            m.forward = packed_forward(m, op._reorder_linear_weight(m.weight.detach(), rows))
        yield
    finally:
        for m in linears:
            m.__dict__.pop("forward", None)


def _length_groups(lengths: Sequence[int], slack: float = 1.25) -> list[list[int]]:
    """Row indices grouped by context length (sorted), a new group whenever a row is ``slack``× the group's shortest."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for row in order:
        if groups and lengths[row] <= slack * lengths[groups[-1][0]]:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


@functools.cache
def _growing_layer():
    """A transformers cache layer whose keys and values live in a buffer allocated once for the whole generation: a
    step writes its keys and values in place instead of re-concatenating the cache (DynamicLayer copies it all at
    every step). ``keys``/``values`` are views of the filled part."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        is_croppable = False

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity, self.length = capacity, 0
            self.k = self.v = torch.empty(0)

        def _views(self) -> None:
            self.keys, self.values = self.k[:, :, : self.length], self.v[:, :, : self.length]

        def place(self, rows: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, batch: int, length: int) -> None:
            """Write a prefill group's keys and values into ``rows``, right-aligned at ``length`` (left of them stays
            zero: the padding slots, masked)."""
            if not self.is_initialized:
                _, heads, _, dim = keys.shape
                self.k = keys.new_zeros((batch, heads, self.capacity, dim))
                self.v = values.new_zeros((batch, heads, self.capacity, dim))
                self.device, self.is_initialized = keys.device, True
            self.k[rows, :, length - keys.shape[-2] : length] = keys
            self.v[rows, :, length - values.shape[-2] : length] = values
            self.length = length
            self._views()

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
            n = key_states.shape[-2]
            self.k[:, :, self.length : self.length + n] = key_states
            self.v[:, :, self.length : self.length + n] = value_states
            self.length += n
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.k, self.v = self.k[indices], self.v[indices]
            self._views()

    return GrowingLayer


def _left_pad(contexts: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, ctx in enumerate(contexts):
        ids[row, width - len(ctx) :] = torch.tensor(ctx, dtype=torch.long)
        mask[row, width - len(ctx) :] = 1
    return ids, mask


def _pick(logits: torch.Tensor, params: SamplingParams, greedy: bool) -> torch.Tensor:
    """The next token of each row, as transformers' generate picks it: argmax, or one multinomial draw from the
    softmax of the warped logits."""
    if greedy:
        return torch.argmax(logits, dim=-1)
    return torch.multinomial(torch.softmax(warp(logits, params), dim=-1), num_samples=1).squeeze(1)


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-p (the smallest set of tokens whose probability reaches ``top_p``; the rest -inf), with the
    same operations as transformers' TemperatureLogitsWarper and TopPLogitsWarper, so the result is bit for bit theirs."""
    if params.temperature != 1.0:
        logits = logits / params.temperature
    if params.top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(logits, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - params.top_p)
        remove[..., -1:] = 0
        logits = logits.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    return logits


def cached_generate(policy: Policy, engine: Engine, contexts: list[list[int]], params: SamplingParams) -> list[Generation]:
    """Greedy answers of an untrained model, cached on disk: same weights file, contexts and settings → same answers."""
    import transformers

    source = str(policy.model.name_or_path)
    stamp = [f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in sorted(Path(source).glob("*.safetensors"))]
    key = json.dumps([source, stamp, contexts, params.max_new_tokens, getattr(engine, "batch_size", None), getattr(engine, "linear", None), str(policy.device),
                      str(policy.model.dtype), torch.__version__, transformers.__version__])
    path = cache_dir() / "answers" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
    if path.is_file():
        return _read_answers(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # processes that ask for the same answers at once (a sweep's cells): one generates, the others read
        if path.is_file():
            return _read_answers(path)
        answers = engine.generate(contexts, params)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([{"text": a.text, "token_ids": list(a.token_ids), "finished": a.finished} for a in answers]))
        tmp.replace(path)
    return answers


def _read_answers(path: Path) -> list[Generation]:
    return [Generation(a["text"], tuple(a["token_ids"]), a["finished"]) for a in json.loads(path.read_text())]
