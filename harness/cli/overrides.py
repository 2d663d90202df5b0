"""From options to a validated config: one --set parser for every command, and errors that name what is wrong.

``Overrides`` starts from a --config file (or nothing) and records, for every key an option sets, which option set it;
validation then reports every error at once, each blamed on its option (``--set trainer.lr=[1,``, ``--method``) or,
for keys the file holds, on the file and line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from core.errors import UserInputError
from core.yamlio import load_value

if TYPE_CHECKING:
    from harness.cli.options import RunOptions

M = TypeVar("M", bound=BaseModel)


def parse_value(raw: str, option: str) -> Any:
    """An option's value as YAML 1.2 (the one place --set values are parsed: ``off`` stays 'off', only true/false are
    booleans); unreadable YAML names the option."""
    try:
        return load_value(raw)
    except yaml.YAMLError as exc:
        raise UserInputError(f"{option}: not a YAML value ({getattr(exc, 'problem', None) or 'unreadable'})") from None


def parse_set(item: str) -> tuple[str, Any]:
    """``--set KEY=VALUE`` as (dotted key, parsed value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UserInputError(f"--set {item}: expected KEY=VALUE, e.g. trainer.lr=1e-5")
    return key.strip(), parse_value(raw, f"--set {item}")


class Overrides:
    """Config data being assembled from a file and options, with each option-set key's origin."""

    def __init__(self, config: Path | None = None, data: dict[str, Any] | None = None):
        self.source = config
        self.tree: yaml.Node | None = None
        self.data: dict[str, Any] = data or {}
        self.origin: dict[str, str] = {}
        if config is not None:
            from core.yamlio import read_yaml

            data, self.tree = read_yaml(config)
            if not isinstance(data, dict):
                raise UserInputError("expected a mapping of fields", path=config, line=1)
            self.data = data

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    def set(self, dotted: str, value: Any, origin: str) -> None:
        """Set ``dotted`` (creating sections) to ``value``; ``origin`` is the option, as errors will name it."""
        keys = dotted.split(".")
        node = self.data
        for key in keys[:-1]:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise UserInputError(f"{origin}: '{key}' is not a section")
        node[keys[-1]] = value
        self.origin[dotted] = origin

    def apply_sets(self, items: list[str] | None) -> None:
        for item in items or []:
            key, value = parse_set(item)
            self.set(key, value, f"--set {item}")

    def validate(self, model: type[M]) -> M:
        """``model`` from the data; every validation error reported at once, on one line."""
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            messages = dict.fromkeys(self._message(model, error) for error in exc.errors())
            raise UserInputError("; ".join(messages)) from None

    def _message(self, model: type[BaseModel], error: Any) -> str:
        from core.yamlio import _data_path, _fields, node_line

        loc = _data_path(self.data, error["loc"])
        field = ".".join(str(p) for p in loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(_fields(model, loc[:-1])))
            message = f"unknown field (allowed here: {allowed})" if allowed else "unknown field"
        origins = [k for k in self.origin if field and (field == k or field.startswith(k + ".") or k.startswith(field + "."))]
        if origins:
            origin = self.origin[max(origins, key=len)]
            return f"{origin}: " + (message if origin.startswith("--set") else f"{message} (field '{field}')")
        if self.source is not None and (field or not self.origin):  # the file's (a whole-config error is the file's only when no option is given)
            return UserInputError(message, path=self.source, line=node_line(self.tree, loc), field=field or None).render()
        return f"field '{field}': {message}" if field else message


def advantage_reference_key(section: type[BaseModel], prefix: str) -> str:
    """The config key of the advantage reference: ``advantage_reference`` (``baseline`` in configs written before the rename)."""
    return f"{prefix}.advantage_reference" if "advantage_reference" in section.model_fields else f"{prefix}.baseline"


def run_overrides(o: RunOptions) -> Overrides:
    """personalize's options (shared by flip, continual and redteam) over its --config, as config data."""
    from harness.cli.options import flag, plain
    from trainers.sdpo import SDPOConfig

    out = Overrides(o.config)
    for f in dataclasses.fields(o):
        key, value = f.metadata["key"], getattr(o, f.name)
        if key is not None and value is not None:
            if key == "trainer.advantage_reference":
                key = advantage_reference_key(SDPOConfig, "trainer")
            out.set(key, plain(value), flag(f.name))
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
    return out


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
