"""Parsed TOML -> a typed, frozen dataclass, checked against the dataclass's own annotations.

The schema is the dataclass: each field's type annotation says what a value must be, its field
metadata adds ranges and choices (``field(default=1, metadata=bounds(low=0))``), a field without a
default is required, and a nested dataclass is a nested table. So a field added to a profile
dataclass is checked without touching anything here. Errors are ``ConfigError`` with one line that
names the field (dotted for nested tables), the value and what is expected; an unknown key gets a
"did you mean" and the valid keys of its table.

Supported annotations: ``bool``, ``int``, ``float`` (an integer is accepted as is, so fingerprints
of stored profiles do not change), ``str``, ``X | None`` (``None`` only as a default: TOML has no
null), ``tuple[X, ...]`` and ``list[X]`` (a TOML array), ``Literal[...]``, nested dataclasses, and
``dict[str, X]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")

#: Field metadata keys understood here.
LOW, HIGH, LOW_OPEN, CHOICES = "low", "high", "low_open", "choices"


class ConfigError(ValueError):
    """A value does not fit its dataclass field; the message names the field and the value."""


def bounds(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> dict[str, Any]:
    """Field metadata: a number within [low, high] (``low_open``: strictly above ``low``); for a
    list, every element."""
    return {LOW: low, HIGH: high, LOW_OPEN: low_open}


def choices(*allowed: str) -> dict[str, Any]:
    """Field metadata: a string (or every element of a list) among ``allowed``."""
    return {CHOICES: tuple(allowed)}


def did_you_mean(word: str, known: list[str]) -> str:
    """``" (did you mean 'x'?)"`` when a known word is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(kind: Any) -> str:
    """What a value of annotation ``kind`` is, in words (for error messages)."""
    origin = typing.get_origin(kind)
    if kind is bool:
        return "true or false"
    if kind is int:
        return "a whole number"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(kind)))
    if origin in (tuple, list):
        return f"a list of {plural(typing.get_args(kind)[0])}"
    if origin in (dict, Mapping):
        return "a table"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(kind) if a is not type(None))
    if dataclasses.is_dataclass(kind):
        return "a table"
    return getattr(kind, "__name__", str(kind))


def plural(kind: Any) -> str:
    """``describe`` for the elements of a list."""
    return {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}.get(kind, describe(kind))


def show(value: Any) -> str:
    """A value as the user wrote it in TOML (strings quoted, booleans lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{...}"
    return repr(value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_value(value: Any, kind: Any, where: str, meta: Mapping[str, Any]) -> Any:
    """``value`` converted to annotation ``kind`` (lists -> tuples, tables -> dataclasses), or ConfigError."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        real = [a for a in options if a is not type(None)]
        if len(real) == 1:
            return check_value(value, real[0], where, meta)
        for option in real:
            try:
                return check_value(value, option, where, meta)
            except ConfigError:
                continue
        raise ConfigError(f"{where}={show(value)}: expected {describe(kind)}")
    if origin in (tuple, list):
        args = typing.get_args(kind)
        if not isinstance(value, list | tuple):
            example = f"[{show(value)}]" if not isinstance(value, dict) else "[...]"
            raise ConfigError(f"{where}={show(value)}: expected {describe(kind)}, e.g. {example}")
        element = args[0]
        items = [check_value(v, element, f"{where}[{i}]", meta) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={show(value)}: expected a table")
        _, value_kind = typing.get_args(kind)
        return {k: check_value(v, value_kind, f"{where}.{k}", {}) for k, v in value.items()}
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise ConfigError(f"{where}={show(value)}: expected one of {', '.join(map(str, allowed))}"
                              f"{did_you_mean(str(value), [str(a) for a in allowed])}")  # fmt: skip
        return value
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={show(value)}: expected a table with keys {', '.join(field_names(kind))}")
        return build(kind, value, where)
    return _check_scalar(value, kind, where, meta)


def _check_scalar(value: Any, kind: Any, where: str, meta: Mapping[str, Any]) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={show(value)}: expected true or false")
        return value
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}={show(value)}: expected a whole number")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)):
        raise ConfigError(f"{where}={show(value)}: expected a number")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{where}={show(value)}: expected a string")
    if kind not in (int, float, str):
        raise TypeError(f"{where}: annotation {kind!r} is not supported by robe_lab.typedconfig")
    allowed = meta.get(CHOICES)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{where}={show(value)}: expected one of {', '.join(allowed)}"
                          f"{did_you_mean(str(value), list(allowed))}")  # fmt: skip
    low, high, low_open = meta.get(LOW), meta.get(HIGH), meta.get(LOW_OPEN, False)
    if isinstance(value, int | float) and (low is not None or high is not None):
        below = low is not None and (value <= low if low_open else value < low)
        if below or (high is not None and value > high):
            left = "(" if low_open else "["
            span = f"{left}{'-inf' if low is None else _number(low)}, {'inf' if high is None else _number(high)}]"
            raise ConfigError(f"{where}={show(value)}: expected {describe(kind)} within {span}")
    return value


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def field_names(cls: type) -> list[str]:
    """The keys a table for dataclass ``cls`` may have (its init fields)."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def build(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """An instance of dataclass ``cls`` from a parsed TOML table, every value checked first.

    ``where`` prefixes field names in errors (``path1`` -> ``path1.rtt_ms``). The dataclass's own
    ``__post_init__`` still runs for what a single field cannot say (values that depend on each
    other); its errors pass through unchanged.
    """
    prefix = f"{where}." if where else ""
    known = field_names(cls)
    for key in data:
        if key not in known:
            table = f"[{where}]" if where else "the profile"
            raise ConfigError(f"{prefix}{key}: unknown field{did_you_mean(key, known)}; "
                              f"valid fields of {table}: {', '.join(known)}")  # fmt: skip
    hints = _hints(cls)  # type: ignore[arg-type]  # a dataclass type is hashable
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # build() is for dataclasses
        if not f.init:
            continue
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{prefix}{f.name}: required, {describe(hints[f.name])} (missing)")
            continue
        values[f.name] = check_value(data[f.name], hints[f.name], prefix + f.name, f.metadata)
    return cls(**values)
