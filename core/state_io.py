"""Nested training state (an optimizer's ``state_dict``, counters) as safetensors + JSON, never pickle; atomic folders.

``flatten`` splits a nested structure of dicts, lists, tuples, tensors and JSON scalars into a JSON-able skeleton and
a flat ``{key: tensor}`` map; ``unflatten`` reverses it exactly (dict keys keep their type: optimizer state is keyed
by parameter index). ``atomic_folder`` writes a folder under a temporary name, fsyncs every file and renames it, so
a reader sees either the whole folder or none of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def flatten(obj: Any, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "t") -> tuple[Any, dict[str, torch.Tensor]]:
    """(skeleton, tensors): tensors replaced by ``{"__tensor__": key}``, dicts by ``{"__dict__": [[key, value], ...]}``,
    tuples by ``{"__tuple__": [...]}``."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}, tensors
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"state dict key {k!r} is neither str nor int")
            items.append([k, flatten(v, tensors, prefix)[0]])
        return {"__dict__": items}, tensors
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, prefix)[0] for v in obj]}, tensors
    if isinstance(obj, list):
        return [flatten(v, tensors, prefix)[0] for v in obj], tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (tensors and JSON values only)")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton["__tuple__"])
        raise ValueError(f"unknown checkpoint node {sorted(skeleton)}")
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_state(folder: Path, name: str, state: Any) -> None:
    """``state`` as ``NAME.safetensors`` (its tensors) + ``NAME.json`` (the rest)."""
    skeleton, tensors = flatten(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton), encoding="utf-8")


def load_state(folder: Path, name: str, device: torch.device | str = "cpu") -> Any:
    tensors = load_file(str(folder / f"{name}.safetensors"), device=str(device))
    return unflatten(json.loads((folder / f"{name}.json").read_text(encoding="utf-8")), tensors)


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success fsync its files, replace ``target`` with it and fsync
    the parent. On an exception the temporary folder is removed and ``target`` is untouched."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
