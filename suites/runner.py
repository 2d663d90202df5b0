"""`hindsight eval`: a checkpoint on every entry of a suite, each entry's result cached on disk.

An entry's cache key covers what decides its numbers: the model's files (names, sizes, modification times; an
adapter's base model too), the entry as written, the content of its local task folder and data files, the options
(limit, batch size, backend, device) and the versions of lm-eval, alpaca-eval, torch and transformers. An unchanged
rerun therefore loads no model and runs nothing; changing one entry reruns that entry only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from core.errors import UserInputError
from core.models import resolve_model
from core.records import now
from core.runtime import cache_dir
from judges import JudgeSettings
from suites.results import EntryResult, EvalResult
from suites.suite import EntryRun, Suite, SuiteEntry

Backend = Literal["auto", "hf", "vllm"]


@dataclass(frozen=True)
class EvalOptions:
    backend: Backend = "auto"
    batch_size: int = 8
    limit: float | None = None
    device: str = "auto"
    cache: bool = True
    judge: JudgeSettings | None = None  # replaces the judge of alpaca_eval and usereval entries


def resolve_checkpoint(spec: str, results: Path = Path("results")) -> tuple[Path | str, bool]:
    """A model spec (see core.models) or a run (folder or id under ``results``): its treated checkpoint, or its only one.
    Returns the local folder (or hub id) and whether it holds a LoRA adapter."""
    run = Path(spec) if Path(spec).is_dir() else results / spec
    if (run / "config.yaml").is_file() and not (run / "config.json").is_file():
        found = sorted(p for p in (run / "checkpoints").glob("*") if p.is_dir())
        treated = [p for p in found if p.name.startswith("treated")]
        if len(found) != 1 and len(treated) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise UserInputError(f"{run}: a run folder; name one of its checkpoints ({names}) as {run}/checkpoints/NAME")
        spec = str(found[0] if len(found) == 1 else treated[0])
    source = resolve_model(spec)
    return source, isinstance(source, Path) and (source / "adapter_config.json").is_file()


def fingerprint(source: Path | str) -> list[str]:
    """What identifies a model's weights without reading them: each file's name, size and mtime (and an adapter's base)."""
    if not isinstance(source, Path):
        return [source]
    stamp = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(source.iterdir()) if p.is_file()]
    adapter = source / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base:
            stamp += ["base:"] + fingerprint(resolve_model(base))
    return [str(source.resolve())] + stamp


def missing_inputs(suite: Suite, entries: list[int]) -> list[str]:
    """Data the given entries need that is not here: local data files, and (only when the hub is unreachable) hub data."""
    from suites.lmeval import hub_reachable

    reachable: list[bool] = []

    def online() -> bool:  # asked at most once, and only by an entry that reads hub data
        if not reachable:
            reachable.append(hub_reachable())
        return reachable[0]

    return [line for index in entries for line in suite.entries[index].missing_inputs(suite, online)]


def entry_key(entry: SuiteEntry, suite: Suite, model: list[str], options: EvalOptions, backend: str) -> str:
    files = []
    for field in ("path", "data"):
        value = getattr(entry, field, None)
        if isinstance(value, str) and not value.startswith("hf:"):
            root = suite.resolve(value)
            paths = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if root.is_dir() else [root]
            files += [f"{p.relative_to(root) if root.is_dir() else p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in paths if p.exists()]
    judge = options.judge.model_dump(mode="json") if options.judge and entry.judged else None
    payload = {"model": model, "entry": entry.model_dump(mode="json"), "files": files, "judge": judge, "limit": options.limit,
               "batch_size": options.batch_size, "backend": backend if entry.uses_lm_backend else "hf", "device": _device(options.device),
               "versions": {p: _version(p) for p in ("lm-eval", "alpaca-eval", "torch", "transformers")}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


class Checkpoint:
    """The evaluated model, loaded on first use (a fully cached run never loads it); adapters are merged for evaluation."""

    def __init__(self, source: Path | str, adapter: bool, options: EvalOptions, backend: str):
        self.source, self.adapter, self.options, self.backend = source, adapter, options, backend
        self._policy = None
        self._lm = None

    @property
    def policy(self):
        if self._policy is None:
            from core.policy import Policy, PolicySettings

            policy = Policy.load(PolicySettings(model=str(self.source), device=self.options.device))  # type: ignore[arg-type]
            if self.adapter:
                policy.model = policy.model.merge_and_unload()
            policy.model.eval().requires_grad_(False)
            self._policy = policy
        return self._policy

    def lm(self):
        if self._lm is None:
            from suites.lmeval import make_lm

            self._lm = make_lm(self.policy, self._vllm_folder(), self.backend, self.options.batch_size)
        return self._lm

    def _vllm_folder(self) -> Path:
        """vLLM reads a folder: the checkpoint itself, or for an adapter a merged copy saved once."""
        if self.backend != "vllm" or not self.adapter:
            return Path(self.source)
        target = cache_dir() / "merged" / hashlib.sha256(json.dumps(fingerprint(self.source)).encode()).hexdigest()[:16]
        if not (target / "config.json").is_file():
            self.policy.model.save_pretrained(target, safe_serialization=True)
            self.policy.tokenizer.save_pretrained(target)
        return target


def evaluate_checkpoint(spec: str, suite: Suite, options: EvalOptions, say: Callable[[str], None] = lambda _: None,
                        results: Path = Path("results")) -> EvalResult:
    """Run (or read from the cache) every entry of ``suite`` on the checkpoint ``spec``."""
    source, adapter = resolve_checkpoint(spec, results)
    backend = _backend(options.backend)
    model = fingerprint(source)
    keys = [entry_key(e, suite, model, options, backend) for e in suite.entries]
    store = Path(os.environ.get("HINDSIGHT_EVAL_CACHE") or cache_dir() / "eval")
    done: dict[int, EntryResult] = {}
    if options.cache:
        for index, key in enumerate(keys):
            path = store / f"{key}.json"
            if path.is_file():
                try:
                    done[index] = EntryResult.model_validate_json(path.read_text())
                except ValueError:
                    pass  # a damaged entry is simply computed again
    pending = [i for i in range(len(suite.entries)) if i not in done]
    if pending:
        from suites.lmeval import prepare_offline_env

        prepare_offline_env()
        missing = missing_inputs(suite, pending)
        if missing:
            raise UserInputError(f"suite '{suite.name}' cannot run here; missing: {'; '.join(missing)}. Connect to the Hugging Face hub once "
                                 "(datasets are cached for later offline runs) or build the missing files", path=suite.file)
    checkpoint = Checkpoint(source, adapter, options, backend)
    hits = len(done)
    for index in range(len(suite.entries)):
        entry = suite.entries[index]
        if index in done:
            say(f"{entry.label()}: cached")
            continue
        say(f"{entry.label()}: running ({entry.kind})")
        start = time.perf_counter()
        metrics, details = _run_entry(entry, suite, checkpoint, options, _name(spec))
        result = EntryResult(name=entry.label(), kind=entry.kind, metrics=metrics, seconds=time.perf_counter() - start, cache_key=keys[index], details=details)
        store.mkdir(parents=True, exist_ok=True)
        tmp = store / f".{keys[index]}.tmp"
        tmp.write_text(result.model_dump_json())
        tmp.replace(store / f"{keys[index]}.json")
        done[index] = result
        say(f"{entry.label()}: done in {result.seconds:.0f} s")
    return EvalResult(model=spec, model_path=str(source), suite=suite.name, suite_file=str(suite.file), created=now(), limit=options.limit,
                      backend=backend, cache_hits=hits, entries=[done[i] for i in range(len(suite.entries))])


def _run_entry(entry: SuiteEntry, suite: Suite, checkpoint: Checkpoint, options: EvalOptions, model_name: str) -> tuple[dict, dict[str, Any]]:
    """The entry type's own runner (its ``run``; suites/suite.py ENTRY_TYPES)."""
    run = EntryRun(suite=suite, model=checkpoint, model_name=model_name, limit=options.limit, batch_size=options.batch_size,
                   device=options.device, judge=options.judge)
    return entry.run(run)


def _backend(choice: Backend) -> str:
    import importlib.util

    import torch

    has_vllm = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    if choice == "vllm" and not has_vllm:
        raise UserInputError("--backend vllm needs vLLM installed and a CUDA device (`pip install -e '.[vllm]'` on a GPU machine); use --backend hf")
    return choice if choice != "auto" else "vllm" if has_vllm else "hf"


def _device(device: str) -> str:
    from core.runtime import resolve_device

    return resolve_device(device).type  # type: ignore[arg-type]


def _name(spec: str) -> str:
    path = Path(spec)
    return "-".join(path.parts[-3:]) if len(path.parts) > 1 else spec


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "-"
