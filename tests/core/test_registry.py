"""core/registry.py: register, create (recording name and arguments), names, and the unknown-name error."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import BaseModel, ConfigDict, field_validator

from core.registry import Registered, Registry, UnknownName, registered


@dataclass
class Adder:
    step: int

    def __call__(self, x: int) -> int:
        return x + self.step


def test_register_create_and_record():
    things: Registry[Adder] = Registry("adder")

    @things.register("plus", help="adds step")
    def plus(step: int = 1) -> Adder:
        return Adder(step)

    things.add("twice", lambda step: Adder(2 * step))
    assert things.names() == ["plus", "twice"] and "plus" in things and len(things) == 2
    assert things.info("plus") == {"help": "adds step"} and things.info("twice") == {}
    three = things.create("plus", step=3)
    assert three(4) == 7 and things.create("twice", step=3)(4) == 10
    assert registered(three) == Registered("adder", "plus", {"step": 3})
    assert registered(three).as_dict() == {"registry": "adder", "name": "plus", "args": {"step": 3}}
    assert registered(Adder(1)) is None


def test_arguments_are_recorded_json_safe():
    class Settings(BaseModel):
        kind: str = "x"
        n: int = 2

    things: Registry[object] = Registry("thing")
    things.add("box", lambda **kw: type("Box", (), {})())
    made = things.create("box", settings=Settings(), items=(1, "a"), table={"k": None}, other=object())
    assert registered(made).args == {"settings": {"kind": "x", "n": 2}, "items": [1, "a"], "table": {"k": None}, "other": "<object>"}


def test_unknown_name_lists_the_known_ones():
    things: Registry[int] = Registry("colour")
    things.add("red", lambda: 1)
    things.add("blue", lambda: 2)
    with pytest.raises(UnknownName) as caught:
        things.create("green")
    assert str(caught.value) == "unknown colour 'green' (known: red, blue)"
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
    assert str(pytest.raises(UnknownName, Registry("empty").check, "x").value) == "unknown empty 'x' (known: none registered)"


def test_a_name_is_registered_once_and_can_be_removed():
    things: Registry[int] = Registry("thing")
    one = things.register("one")(lambda: 1)
    things.add("one", one)  # the same factory again is harmless
    with pytest.raises(ValueError, match="thing 'one' is already registered"):
        things.add("one", lambda: 2)
    things.remove("one")
    assert things.names() == []


def test_components_that_take_no_attributes_are_still_built():
    things: Registry[object] = Registry("thing")
    things.add("none", lambda: None)
    things.add("int", lambda: 5)
    assert things.create("none") is None and things.create("int") == 5 and registered(5) is None


def test_check_is_a_pydantic_validator():
    sizes: Registry[int] = Registry("size")
    sizes.add("small", lambda: 1)

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: str = "small"

        @field_validator("size")
        @classmethod
        def _known(cls, value: str) -> str:
            return sizes.check(value)

    assert Config(size="small").size == "small"
    with pytest.raises(ValueError, match=r"unknown size 'huge' \(known: small\)"):
        Config(size="huge")
