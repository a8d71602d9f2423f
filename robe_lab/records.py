"""Typed JSON-lines records: what one process writes and another reads, checked at the boundary.

A log that crosses a process boundary (a server's lines on stdout, the agent's answers, the MPTCP
monitor's or the DNS stub's log file) declares one frozen dataclass per record kind, with the
kind's name in ``EVENT``; the module that writes them also holds their reader, built from
``RecordKinds``. Every line carries its kind under one key, ``event``. The reader checks each
field's type against the dataclass (``RecordError`` naming the log, the field and the value), so
a consumer reads attributes, never guesses at dict keys.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

#: The key naming a record's kind, in every log.
KIND_KEY = "event"


class RecordError(ValueError):
    """A line that is not a record of its log; the message names the log, the field and the value."""


class Record:
    """Base of a record kind: a dataclass with its kind's name in ``EVENT``."""

    EVENT: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object of its line (kind first)."""
        return {KIND_KEY: self.EVENT, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def to_line(self) -> str:
        """One JSON line (without its newline)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


R = TypeVar("R", bound=Record)


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` (ints accepted for floats, nested records built, JSON's string keys of
    int-keyed dicts turned back into ints); TypeError when it does not fit."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check(value, option)
            except TypeError:
                continue
        raise TypeError(_describe(hint))
    if hint is type(None):
        if value is None:
            return None
        raise TypeError("null")
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise TypeError(_describe(hint))
        return [_check(v, item) for v in value]
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        if not isinstance(value, dict):
            raise TypeError(_describe(hint))
        keys = {k: int(k) if key_hint is int and isinstance(k, str) and k.lstrip("-").isdigit() else k for k in value}
        return {_check(keys[k], key_hint): _check(v, value_hint) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise TypeError(hint.__name__)
        return build(hint, value, hint.__name__)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise TypeError(hint.__name__)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise TypeError(_describe(hint))


T = TypeVar("T")


def build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """An instance of the dataclass ``cls`` from ``data``: every field checked, missing required
    fields and unknown keys refused (``RecordError`` naming ``where``, the field and the value)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields) - {KIND_KEY})
    if unknown:
        raise RecordError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise RecordError(f"{where}: field {name!r} missing")
            continue
        try:
            values[name] = _check(data[name], hints[name])
        except TypeError as err:
            raise RecordError(f"{where}: {name}={data[name]!r}: not a {err}") from None
    return cls(**values)


class RecordKinds(Generic[R]):
    """The record kinds of one log, and its reader."""

    def __init__(self, log: str, kinds: Iterable[type[R]]) -> None:
        self.log = log
        self.kinds = {kind.EVENT: kind for kind in kinds}

    def parse(self, data: Any, where: str | None = None) -> R:
        """One decoded JSON object as its record (``RecordError`` otherwise)."""
        where = where or self.log
        if not isinstance(data, dict):
            raise RecordError(f"{where}: {data!r} is not a JSON object")
        kind = data.get(KIND_KEY)
        if kind not in self.kinds:
            raise RecordError(f"{where}: {KIND_KEY}={kind!r}: unknown (known: {', '.join(self.kinds)})")
        return build(self.kinds[kind], data, f"{where} ({kind})")

    def read_line(self, line: str | bytes, where: str | None = None) -> R:
        """One line of the log as its record (``RecordError`` for a line that is not JSON or not a record)."""
        try:
            data = json.loads(line)
        except ValueError as err:
            raise RecordError(f"{where or self.log}: not JSON ({err}): {str(line)[:120]!r}") from None
        return self.parse(data, where)

    def read_lines(self, lines: Iterable[str | bytes], where: str | None = None) -> list[R]:
        """Every non-empty line as its record."""
        return [self.read_line(line, where) for line in lines if line.strip()]


def read_appended(path: Path, offset: int) -> tuple[list[Any], int]:
    """The JSON lines appended to ``path`` since byte ``offset`` (complete lines only: one still being
    written is left for the next call) and the new offset; nothing when the file does not exist."""
    if not path.exists():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    try:
        lines = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    except ValueError as err:
        raise RecordError(f"{path}: a line is not JSON ({err})") from None
    return lines, offset + end
