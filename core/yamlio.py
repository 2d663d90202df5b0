"""Load YAML into pydantic models with one-line errors that name the file, the line and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from core.errors import UserInputError, read_text

M = TypeVar("M", bound=BaseModel)


class _Yaml12Loader(yaml.SafeLoader):
    """The safe loader with YAML 1.2's booleans: only true/false (yes, no, on, off, y, n stay strings)."""


_Yaml12Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
                                         for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_value(text: str) -> object:
    """One value written on the command line (``--set KEY=VALUE``), read as YAML 1.2: ``off`` is the string 'off', not False."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader


def read_yaml(path: Path) -> tuple[object, yaml.Node | None]:
    """Parsed data and its node tree (for line numbers); YAML syntax errors become UserInputError."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_Yaml12Loader), yaml.compose(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserInputError(f"invalid YAML: {problem}", path=path, line=mark.line + 1 if mark else None) from None


def node_line(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the deepest node on ``loc`` that exists in the tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            if match is None:
                # an unknown key: point at the key itself
                key_node = next((k for k, _ in node.value if k.value == str(key)), None)
                return key_node.start_mark.line + 1 if key_node is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def validate(model: type[M], data: object, *, path: Path, tree: yaml.Node | None = None) -> M:
    """``model.model_validate(data)`` with a one-line UserInputError on failure."""
    if not isinstance(data, dict):
        raise UserInputError(f"expected a mapping of fields, got {type(data).__name__}", path=path, line=1)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = data_path(data, first["loc"])
        field = ".".join(str(p) for p in loc) or None
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(field_names(model, loc[:-1])))
            message = f"unknown field (allowed here: {allowed})" if allowed else "unknown field"
        raise UserInputError(message, path=path, line=node_line(tree, loc), field=field) from None


def data_path(data: object, loc: tuple) -> tuple:
    """Pydantic's error location with union tags (e.g. a check's 'kind' value) dropped: the path as written in YAML."""
    path, node = [], data
    for n, part in enumerate(loc):
        last = n == len(loc) - 1
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif not last:
            continue  # a tag pydantic inserted, not a key of the file
        path.append(part)
    return tuple(path)


def load_model_file(model: type[M], path: Path) -> M:
    data, tree = read_yaml(path)
    return validate(model, data, path=path, tree=tree)


def field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``, for 'allowed here' hints; best effort."""
    current: type[BaseModel] | None = model
    for key in loc:
        if current is None or isinstance(key, int):
            continue
        info = current.model_fields.get(str(key))
        annotation = getattr(info, "annotation", None)
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(current.model_fields) if current is not None else []


_DEPRECATED_SEEN: set[tuple[str, str]] = set()


def renamed_key(data: object, old: str, new: str, where: str) -> object:
    """For a ``model_validator(mode="before")``: a mapping that spells a renamed field the old way gets it moved to the new
    name, with one deprecation line on stderr per process and name (both spellings at once is an error)."""
    if not isinstance(data, dict) or old not in data:
        return data
    if new in data:
        raise ValueError(f"{where}.{old} is the old name of {where}.{new}: give only {new}")
    data = {(new if key == old else key): value for key, value in data.items()}
    if (where, old) not in _DEPRECATED_SEEN:
        _DEPRECATED_SEEN.add((where, old))
        import sys

        print(f"hindsight: deprecated: {where}.{old} is now {where}.{new}; the old name is still read, for now", file=sys.stderr)
    return data
