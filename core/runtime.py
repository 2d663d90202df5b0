"""Process-wide runtime settings: cache folder, torch threads, device and dtype, seeding, peak memory, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch

DeviceName = Literal["auto", "cpu", "cuda"]


def cache_dir() -> Path:
    """Where converted models and other derived artefacts live (``$HINDSIGHT_CACHE`` overrides)."""
    root = os.environ.get("HINDSIGHT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hindsight"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_device(device: DeviceName = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU (bf16 matmuls are slow and less exact on most CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads; ``None`` keeps torch's default (see bench/README.md for why 1 is the default)."""
    if threads:
        torch.set_num_threads(threads)


def quiet_libraries() -> None:
    """Silence transformers' per-load progress bars and advisory warnings (our own progress replaces them)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_gb() -> float:
    """This process's peak resident memory so far, in GB (file pages shared with other processes included)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1e9 if sys.platform == "darwin" else 1e6), 2)  # bytes on macOS, KiB elsewhere


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a scheduler's preemption or time limit) raises KeyboardInterrupt as Ctrl-C does,
    so the caller's cleanup runs. Off the main thread, where Python sets no signal handler, it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent(parent: int) -> None:
    """In a child process: on Linux, SIGKILL this process when its parent ``parent`` dies, even by SIGKILL (so no orphan
    goes on writing into the parent's run folder); exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
