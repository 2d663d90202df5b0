"""Config data assembled from a file and options: one value parser, and errors that name what is wrong.

``Overrides`` starts from a config file (or nothing) and records, for every key an option sets, which option set it;
validation then reports every error at once, each blamed on its option (``--set trainer.lr=[1,``, ``--method``, or a
keyword of ``harness.personalize``) or, for keys the file holds, on the file and line. The CLI and the Python API share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from core.errors import UserInputError
from core.yamlio import data_path, field_names, load_value, node_line, read_yaml

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

        loc = data_path(self.data, error["loc"])
        field = ".".join(str(p) for p in loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(field_names(model, loc[:-1])))
            message = f"unknown field (allowed here: {allowed})" if allowed else "unknown field"
        origins = [k for k in self.origin if field and (field == k or field.startswith(k + ".") or k.startswith(field + "."))]
        if origins:
            origin = self.origin[max(origins, key=len)]
            return f"{origin}: " + (message if origin.startswith("--set") else f"{message} (field '{field}')")
        if self.source is not None and (field or not self.origin):  # the file's (a whole-config error is the file's only when no option is given)
            return UserInputError(message, path=self.source, line=node_line(self.tree, loc), field=field or None).render()
        return f"field '{field}': {message}" if field else message
