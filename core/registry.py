"""Registries: a component kind (trainer methods, judge backends, simulators, suite entry types) as name → factory.

In the spirit of Inspect AI's registry: a component is one file whose factory (a function or a class) carries one
``@REGISTRY.register("name", **info)`` line; the rest of the program builds it by name with ``REGISTRY.create(name,
**kwargs)``, which also records what was built (``Registered``: registry, name and arguments) on the component, where
``registered(component)`` reads it back, so that a run can write into its records which components it used and how.

    METHODS: Registry[Trainer] = Registry("trainer method")

    @METHODS.register("sdpo", help="self-distillation from the follow-up")
    def sdpo(inputs: TrainerInputs) -> Trainer: ...

    trainer = METHODS.create("sdpo", inputs=inputs)
    registered(trainer)  # Registered(registry='trainer method', name='sdpo', args={'inputs': '<TrainerInputs>'})

An unknown name is a ``KeyError`` (also a ``ValueError``, so pydantic reports it as a field error) that lists the
known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "__registered__"


class UnknownName(KeyError, ValueError):
    """A name no component of this kind is registered under; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Registered:
    """What ``Registry.create`` built: the registry's kind, the component's name and its arguments (JSON-safe: values that
    are not plain data are written as ``<TypeName>``)."""

    registry: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "name": self.name, "args": dict(self.args)}


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its name, its factory and the information given at registration (help text, …)."""

    name: str
    factory: Callable[..., T]
    info: Mapping[str, Any]


class Registry(Generic[T]):
    """Name → factory for one kind of component. Names are unique; registration order is kept (``names()``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **info: Any) -> Callable[[F], F]:
        """A decorator that registers a factory (or a class) under ``name`` with ``info``; it returns the factory unchanged."""

        def decorate(factory: F) -> F:
            self.add(name, factory, **info)
            return factory

        return decorate

    def add(self, name: str, factory: Callable[..., T], **info: Any) -> None:
        """Register ``factory`` under ``name`` (the decorator's plain form)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} needs a non-empty name")
        if name in self._entries and self._entries[name].factory is not factory:
            raise ValueError(f"{self.kind} '{name}' is already registered (by {_qualname(self._entries[name].factory)})")
        self._entries[name] = Entry(name, factory, dict(info))

    def remove(self, name: str) -> None:
        """Forget ``name`` (for tests that register a component for a while)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(self.unknown(name)) from None

    def info(self, name: str) -> Mapping[str, Any]:
        return self.entry(name).info

    def check(self, name: str) -> str:
        """``name`` when it is registered, else ``UnknownName`` (a ValueError: usable in a pydantic validator)."""
        self.entry(name)
        return name

    def unknown(self, name: object) -> str:
        known = ", ".join(self._entries) or "none registered"
        return f"unknown {self.kind} '{name}' (known: {known})"

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Build the component ``name`` with ``kwargs`` and record both on it (see ``registered``)."""
        component = self.entry(name).factory(**kwargs)
        record = Registered(self.kind, name, {key: _plain(value) for key, value in kwargs.items()})
        try:
            object.__setattr__(component, ATTRIBUTE, record)
        except (AttributeError, TypeError):
            pass  # None, builtins and slotted objects carry no record
        return component


def registered(component: object) -> Registered | None:
    """The record ``Registry.create`` left on ``component`` (None when it was built otherwise)."""
    record = getattr(component, ATTRIBUTE, None)
    return record if isinstance(record, Registered) else None


def _plain(value: Any) -> Any:
    """A JSON-safe rendering of an argument: plain data as is, pydantic settings as their dump, anything else by type."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:  # noqa: BLE001 - a model that does not dump is recorded by type
            pass
    return f"<{type(value).__name__}>"


def _qualname(factory: Callable[..., Any]) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"
