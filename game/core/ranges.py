"""Declared ranges of settings: one ``Range`` per dataclass field, checked where values come in.

A scene field is declared as ``name: int = setting(0, ge=0)``: the range lives in the field's
metadata, so the type, the default and the allowed values are written once, next to each other,
and the loader, the documentation and the property tests all read them from there. Every float must
also be finite (TOML allows ``nan`` and ``inf``, and a NaN slips through every ``<``).

A field with a fixed set of words is typed ``Literal[...]`` (``kind: DatasetKind = setting("digits")``):
the choices are the Literal's, read by ``rule_for`` (never repeated in ``setting``), so the type
checker and the loader agree on them. ``Literal[...] | str`` with ``prefixes`` allows the named
words and any string with one of the prefixes (``network.arch``: ``"torchvision:NAME"``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

RANGE_KEY = "range"
DOC_KEY = "doc"


@dataclass(frozen=True)
class Range:
    """Allowed values of one setting: bounds, a fixed set of choices, special values, a length."""

    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    lt: float | None = None  # value < lt
    choices: tuple[Any, ...] = ()  # the value must be one of these (strings)
    also: tuple[Any, ...] = ()  # special values allowed outside the bounds (0 = "off"/"all")
    aliases: tuple[tuple[str, Any], ...] = ()  # words accepted for a value ("all" -> 0)
    length: int | None = None  # lists: exactly this many items (each item obeys the bounds)
    prefixes: tuple[str, ...] = ()  # strings starting with one of these are allowed too

    def describe(self) -> str:
        """The allowed values in words, as error messages and docs/scenes.md show them."""
        if self.choices:
            words = [repr(c).replace("'", '"') for c in self.choices]
            words += [f'"{p}NAME"' for p in self.prefixes]
            return "one of " + ", ".join(words)
        parts = []
        lo = (
            f"{_num(self.ge)} <= "
            if self.ge is not None
            else (f"{_num(self.gt)} < " if self.gt is not None else "")
        )
        hi = (
            f" <= {_num(self.le)}"
            if self.le is not None
            else (f" < {_num(self.lt)}" if self.lt is not None else "")
        )
        if lo or hi:
            parts.append(f"{lo}x{hi}")
        for v in self.also:
            parts.append(repr(v).replace("'", '"'))
        for word, value in self.aliases:
            parts.append(f'"{word}" (= {value!r})')
        text = " or ".join(parts) if parts else "any value"
        if self.length is not None:
            text = f"{self.length} numbers, each {text}"
        return text

    def accepts(self, value: Any) -> bool:
        """Whether one (already type-checked) scalar value is allowed."""
        if value in self.also and not isinstance(value, bool):
            return True
        if self.choices or self.prefixes:
            return value in self.choices or (isinstance(value, str) and value.startswith(self.prefixes))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def setting(default: Any, *, doc: str = "", **rule: Any) -> Any:
    """A dataclass field with ``default`` (lists are copied per instance), its ``Range`` and doc.

    ``doc`` is the one-line meaning docs/scenes.md shows (fields without ``setting`` keep theirs
    in the comment after them).
    """
    meta = {RANGE_KEY: Range(**rule), DOC_KEY: doc}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def range_of(f: Any) -> Range | None:
    """The ``Range`` declared on a dataclass field (None when it has none)."""
    found: Range | None = f.metadata.get(RANGE_KEY)
    return found


def literal_choices(hint: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` hint allows, also inside a union (``Literal[...] | str``);
    () for any other hint."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(c for option in typing.get_args(hint) for c in literal_choices(option))
    return ()


def rule_for(f: Any, hint: Any) -> Range | None:
    """The allowed values of a dataclass field typed ``hint``: its declared ``Range``, with the
    choices of a ``Literal`` hint. Choices are declared in one place: a field that names them in
    ``setting(choices=...)`` as well as in its type is a mistake (``TypeError``)."""
    rule = range_of(f)
    choices = literal_choices(hint)
    if not choices:
        return rule
    if rule is None:
        return Range(choices=choices)
    if rule.choices:
        raise TypeError(f"{f.name}: choices declared twice (in the Literal type and in setting())")
    return dataclasses.replace(rule, choices=choices)
