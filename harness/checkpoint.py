"""Exact resume: atomic per-arm training state, and the repair of a run log cut by a crash.

``results/<run>/state/``
    ``untrained.json``                written once the untrained model (and oracle) evaluations are all logged
    ``<arm>-s<seed>/latest.json``     the arm's committed state: loop counters and the folder holding the tensors
    ``<arm>-s<seed>/step-NNNNNN/``    ``state.safetensors`` (trainable weights, trainer state, RNG states) and
                                      ``state.json`` (everything else, core/state_io.py); folders no pointer names
                                      are leftovers

A checkpoint is committed by writing its folder (each file fsynced), then replacing ``latest.json`` atomically
(temp file, fsync, rename, fsync of the folder). A kill at any moment leaves either the old or the new pointer,
both naming a complete folder. Safetensors and JSON only: nothing is unpickled on resume.

On resume, every log line after an arm's committed state is dropped (the arm redoes that work with the same
RNG state, so the log ends up as if the run had never stopped) and so is a torn line left by the kill.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from core.errors import RunError
from core.state_io import load_state, save_state

LOGS = ("interactions.jsonl", "metrics.jsonl", "samples.jsonl", "signals.jsonl")
UNTRAINED_ARMS = ("initial", "oracle")


class ArmState(BaseModel):
    """The loop's counters at a committed checkpoint (after update ``step`` and its evaluation, if any)."""

    model_config = ConfigDict(extra="forbid")
    step: int = -1
    done: int = 0
    failures: int = 0
    kept: int | None = None
    finished: bool = False
    folder: str | None = None


# ----- RNG ----------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """Python, numpy and torch (CPU and every CUDA device) generator states."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----- atomic files ----------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old content or the new, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    _write_bytes(tmp, text.encode())
    tmp.replace(path)
    _fsync_dir(path.parent)


# ----- per-arm checkpoints -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmCheckpoints:
    """The committed training states of one arm and seed of a run."""

    folder: Path

    @classmethod
    def of(cls, run_dir: Path, arm: str, seed: int) -> ArmCheckpoints:
        return cls(run_dir / "state" / f"{arm}-s{seed}")

    def latest(self) -> ArmState | None:
        path = self.folder / "latest.json"
        return ArmState.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None

    def save(self, arm_state: ArmState, state: dict) -> None:
        """Commit ``state`` (nested tensors/JSON: weights, trainer, RNG) with the loop's counters, then drop older folders."""
        name = f"step-{arm_state.step:06d}"
        target = self.folder / name
        if target.exists():
            shutil.rmtree(target)  # a leftover of a kill while it was written: never pointed to
        target.mkdir(parents=True)
        save_state(target, "state", state)
        for file in ("state.safetensors", "state.json"):
            with (target / file).open("rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(target)
        self.commit(arm_state.model_copy(update={"folder": name}))

    def commit(self, arm_state: ArmState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / "latest.json", arm_state.model_dump_json())
        for child in self.folder.iterdir():
            if child.is_dir() and child.name != arm_state.folder:
                shutil.rmtree(child)

    def finish(self, arm_state: ArmState) -> None:
        """Mark the arm finished and free the disk its resumable state held."""
        self.commit(arm_state.model_copy(update={"finished": True, "folder": None}))

    def load(self, arm_state: ArmState) -> dict:
        if arm_state.folder is None:
            raise RunError(f"{self.folder}: the committed state names no folder")
        target = self.folder / arm_state.folder
        try:
            return load_state(target, "state")
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{target}: the committed checkpoint cannot be read ({exc}); the run cannot resume exactly") from None


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters an update changes (every weight, or the adapter's under LoRA)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    expected = set(trainable_weights(model))
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights))[:3], sorted(set(weights) - expected)[:3]
        raise RunError(f"the checkpoint's weights do not fit this model (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in weights.items():
            params[name].copy_(value)


# ----- the run log after a crash -------------------------------------------------------------------------
@dataclass
class Repair:
    torn: int = 0  # lines that were not complete JSON (a write cut by the kill)
    dropped: int = 0  # records of work after the committed states, to be redone

    def describe(self) -> str:
        return f"dropped {self.dropped} records written after the last checkpoints and {self.torn} torn lines"


def repair_logs(run_dir: Path, states: dict[tuple[str, int], ArmState | None], untrained_done: bool) -> Repair:
    """Rewrite each log without torn lines and without records past the committed states.

    ``states`` maps every training (arm, seed) to its committed state (None: nothing committed: all its records go).
    """
    repair = Repair()
    for name in LOGS:
        path = run_dir / name
        if not path.is_file():
            continue
        keep: list[str] = []
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                repair.torn += 1
                continue
            if _after_commit(record, states, untrained_done):
                repair.dropped += 1
            else:
                keep.append(line)
        write_atomic(path, "".join(line + "\n" for line in keep))
    return repair


def _after_commit(record: dict, states: dict[tuple[str, int], ArmState | None], untrained_done: bool) -> bool:
    arm, seed = record.get("arm"), record.get("seed")
    if arm in UNTRAINED_ARMS:
        return not untrained_done
    if (arm, seed) not in states:
        return False
    state = states[(arm, seed)]
    if state is None:
        return True
    if state.finished:
        return False
    if "step" in record:  # interactions and updates
        return record["step"] > state.step
    return record["interactions"] > state.done  # evaluations and their samples


def committed_states(run_dir: Path, arms: Iterable[tuple[str, int]]) -> dict[tuple[str, int], ArmState | None]:
    """Each arm's committed state (None: nothing committed yet)."""
    return {(arm, seed): ArmCheckpoints.of(run_dir, arm, seed).latest() for arm, seed in arms}
