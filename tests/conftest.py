"""Shared fixtures: the real embedded SmolLM2 policy (loaded once per test process), and the one CLI launcher.

``cli`` runs `hindsight` in-process (argv and both streams captured, the console script's own error handling), returning
``CliResult(code, stdout, stderr)``; ``HINDSIGHT`` is the command line for a subprocess (``from conftest import HINDSIGHT``).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import pytest
import torch

from core.policy import Policy, PolicySettings
from core.runtime import quiet_libraries

DATA = Path(__file__).parent / "data"  # fixtures shared by the test folders
HINDSIGHT = [sys.executable, "-c", "from harness.cli import run; run()"]


class CliResult(NamedTuple):
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, columns: int = 200, env: dict[str, str] | None = None) -> CliResult:
    """``hindsight ARGS`` in-process through the console-script entry point; any exception but SystemExit propagates (a crash)."""
    from harness.cli import base, run

    out, err = io.StringIO(), io.StringIO()
    widths = [(c, c._width) for c in (base.console, base.err)]
    for c, _ in widths:
        c.width = columns  # the consoles read COLUMNS once, at import
    try:
        with mock.patch.object(sys, "argv", ["hindsight", *args]), mock.patch.dict(os.environ, {"COLUMNS": str(columns), **(env or {})}), redirect_stdout(out), redirect_stderr(err):
            try:
                run()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        for c, width in widths:
            c._width = width
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture()
def cli() -> Callable[..., CliResult]:
    """``cli("runs", "--json")`` → CliResult(code, stdout, stderr)."""
    return run_cli


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests' LLM calls out of the user's cache (subprocesses inherit it); converted models stay shared."""
    os.environ["HINDSIGHT_LLM_CACHE"] = tempfile.mkdtemp(prefix="hindsight-llm-cache-")


@pytest.fixture(scope="session")
def policy() -> Policy:
    quiet_libraries()
    torch.set_num_threads(1)
    return Policy.load(PolicySettings(device="cpu"))


@pytest.fixture()
def fresh_policy() -> Policy:
    """A policy the test may train (a fresh load, ~3 s)."""
    quiet_libraries()
    torch.set_num_threads(1)
    return Policy.load(PolicySettings(device="cpu"))
