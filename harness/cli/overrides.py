"""From the CLI's options to config data (``harness.overrides.Overrides``): each option names its config key once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from harness.overrides import Overrides

if TYPE_CHECKING:
    from harness.cli.options import RunOptions


class OptionsDataclass(Protocol):
    """A command's options as a dataclass (RunOptions, TrainOptions): each field's metadata names its config key."""

    config: Path | None


def from_options(o: OptionsDataclass) -> Overrides:
    """An options dataclass over its --config: each field given sets the config key its metadata names."""
    from harness.cli.options import flag, plain

    out = Overrides(o.config)
    for f in dataclasses.fields(o):
        key, value = f.metadata["key"], getattr(o, f.name)
        if key is not None and value is not None:
            out.set(key, plain(value), flag(f.name))
    return out


def run_overrides(o: RunOptions) -> Overrides:
    """personalize's options (shared by flip, continual and redteam) over its --config, as config data."""
    from harness.cli.options import plain

    out = from_options(o)
    if o.lr is not None:  # the learning rate of whichever method runs
        method = plain(o.method) or out.get("method") or "sdpo"
        out.set("trainer.lr" if method == "sdpo" else "rlhi.lr", o.lr, "--lr")
    if o.lora is not None:
        out.set("policy.lora", {} if o.lora else None, "--lora" if o.lora else "--no-lora")
    if o.fail_fast:
        out.set("fail_budget", 0, "--fail-fast")
    if o.checkpoint_every is not None:
        out.set("checkpoint_every", o.checkpoint_every or None, "--checkpoint-every")
    if o.trust_remote_code:
        out.set("policy.trust_remote_code", True, "--trust-remote-code")
    set_llm(out, "simulator", plain(o.simulator), o.simulator_model, o.api_base, o.api_key_env, default_kind="scripted", option="--simulator-model")
    set_llm(out, "judge", plain(o.judge), o.judge_model, o.judge_api_base, o.judge_api_key_env, default_kind="llm", option="--judge-model")
    if o.rlhi_model or o.rlhi_api_base or o.rlhi_api_key_env:
        llm = {"model": o.rlhi_model or "openai/local", "api_base": o.rlhi_api_base, "api_key_env": o.rlhi_api_key_env}
        out.set("rlhi.llm", {k: v for k, v in llm.items() if v is not None}, "--rlhi-model")
    out.apply_sets(o.set_)
    if o.llm_concurrency is not None:
        set_concurrency(out, o.llm_concurrency)
    return out


LLM_SECTIONS = ("simulator.llm", "judge.llm", "rlhi.llm", "trainer.guard.llm")


def set_concurrency(out: Overrides, n: int) -> None:
    """--llm-concurrency: ``concurrency`` in every LLM section the config holds (after --set, which wins for its own key)."""
    for section in LLM_SECTIONS:
        if isinstance(out.get(section), dict) and f"{section}.concurrency" not in out.origin:
            out.set(f"{section}.concurrency", n, "--llm-concurrency")


def set_llm(out: Overrides, section: str, kind: str | None, model: str | None, api_base: str | None, api_key_env: str | None,
            default_kind: str, option: str) -> None:
    """--simulator-model/--api-base/… or --judge-model/--judge-api-base/…: a local model spec, or litellm settings."""
    if not (model or api_base or api_key_env):
        return
    if (kind or out.get(f"{section}.kind") or default_kind) == "local":
        out.set(f"{section}.model", model, option)
        return
    out.set(f"{section}.kind", "llm", option)
    llm = {"model": model or "openai/local", "api_base": api_base, "api_key_env": api_key_env}
    out.set(f"{section}.llm", {k: v for k, v in llm.items() if v is not None}, option)
