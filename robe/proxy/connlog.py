"""The proxies' connection log: one JSON line per event, flushed as it happens.

Every line has ``event``, ``t_ns`` (``time.monotonic_ns()``, one clock for all namespaces of a
machine), ``role`` (``client_proxy`` or ``haap``) and ``conn`` (the proxy's connection id), plus
the event's fields:

* ``accepted``: ``peer`` (and at the HAAP ``transport``: kernel or user, ``mptcp``).
* ``connected``: ``dst``, ``setup_ns`` (connect started -> established); at the client proxy also
  ``strategy``, ``path`` (winner path), ``local`` (the winner's address), ``first_bytes`` (client
  bytes sent with the header) and ``race`` (the connect's steps, each ``t_ns``/``event``/``path``/
  ``detail``).
* ``refused``: ``reason`` (the HAAP's malformed header or forbidden destination; the client proxy's
  missing original destination).
* ``closed``: after both directions ended and the sockets are closed: ``dst``, ``bytes_up``
  (client -> destination, first data included), ``bytes_down``, ``strategy``, ``path``,
  ``subflows`` (client proxy: the most MPTCP subflows seen, sampled at 5, 10, 20, 40, 80 ms, then
  every 100 ms and at the end; None for plain TCP), ``error`` (None for an orderly end).

* ``accept_failed`` (client proxy: ``error``) and ``warning`` (HAAP: ``reason``), with ``conn`` ``-``.

Experiment 2 takes a page load's end from the last ``closed`` line of the client proxy. The reader
is here, beside the writer: ``read_events`` gives the lines appended since an offset as checked
``ConnEvent`` records (``read_lines``: any JSON-lines log, unchecked).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any, NotRequired, TypedDict

from robe_lab.records import read_appended

#: Every event name the proxies write.
EVENTS = ("accepted", "connected", "refused", "closed", "accept_failed", "warning")


class ConnEvent(TypedDict):
    """One line of the connection log (see the module docstring for which event has which field)."""

    event: str
    t_ns: int
    role: str
    conn: str
    peer: NotRequired[str | None]
    transport: NotRequired[str]
    mptcp: NotRequired[bool]
    dst: NotRequired[str | None]
    setup_ns: NotRequired[int]
    strategy: NotRequired[str]
    path: NotRequired[int | None]
    local: NotRequired[str]
    first_bytes: NotRequired[int]
    race: NotRequired[list[dict[str, Any]]]
    reason: NotRequired[str]
    bytes_up: NotRequired[int]
    bytes_down: NotRequired[int]
    subflows: NotRequired[int | None]
    error: NotRequired[str | None]
    ready: NotRequired[Any]  # client proxy: its subflows' ready times (robe.proxy.aio_connect)
    # closed: the relay's timing (robe.proxy.relay), each None when it did not happen
    first_up_ns: NotRequired[int | None]
    last_up_ns: NotRequired[int | None]
    first_down_ns: NotRequired[int | None]
    last_down_ns: NotRequired[int | None]
    up_eof_ns: NotRequired[int | None]
    down_eof_ns: NotRequired[int | None]


class ConnLogError(ValueError):
    """A line that is not a connection-log event; the message names the line and the field."""


class ConnLog:
    """Appends JSON lines to ``path`` (or nowhere when None)."""

    def __init__(self, path: str | None, role: str) -> None:
        self.role = role
        self.lines = 0
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def event(self, event: str, conn: str, **fields: Any) -> dict[str, Any]:
        """Write one line now and return it."""
        if event not in EVENTS:
            raise ValueError(f"event={event!r}: not a connection-log event (known: {', '.join(EVENTS)})")
        line = {"event": event, "t_ns": time.monotonic_ns(), "role": self.role, "conn": conn, **fields}
        if self._file is not None:
            self._file.write(json.dumps(line, sort_keys=True, default=str) + "\n")
            self._file.flush()
        self.lines += 1
        return line

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None


def read_lines(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """JSON lines appended to ``path`` since byte ``offset`` (complete lines only) and the new offset."""
    return read_appended(path, offset)


_REQUIRED: dict[str, type | tuple[type, ...]] = {"event": str, "t_ns": int, "role": str, "conn": str}


def as_event(record: Any, where: str = "connection log") -> ConnEvent:
    """``record`` checked as a ``ConnEvent`` (ConnLogError naming ``where`` and the field otherwise)."""
    if not isinstance(record, dict):
        raise ConnLogError(f"{where}: {record!r} is not an object")
    for key, kind in _REQUIRED.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise ConnLogError(
                f"{where}: {key}={record.get(key)!r}: missing or not a {getattr(kind, '__name__', kind)}"
            )
    if record["event"] not in EVENTS:
        raise ConnLogError(f"{where}: event={record['event']!r}: unknown (known: {', '.join(EVENTS)})")
    event: ConnEvent = record  # type: ignore[assignment]  # checked above
    return event


def read_events(path: Path, offset: int) -> tuple[list[ConnEvent], int]:
    """The events appended to the log at ``path`` since ``offset`` (complete lines), checked, and the new offset."""
    lines, end = read_lines(path, offset)
    return [as_event(line, f"{path}") for line in lines], end
