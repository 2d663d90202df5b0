"""Shared fixtures: the real embedded SmolLM2 policy (loaded once per test process)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from core.policy import Policy, PolicySettings
from core.runtime import quiet_libraries


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
