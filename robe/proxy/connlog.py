"""The proxies' connection log: one JSON line per event, flushed as it happens.

Every line has ``event``, ``t_ns`` (``time.monotonic_ns()``, one clock for all namespaces of a
machine), ``role`` (``client_proxy`` or ``haap``) and ``conn`` (the proxy's connection id), plus
the event's fields:

* ``accepted``: ``peer`` (and at the HAAP ``transport``: kernel or user, ``mptcp``).
* ``connected``: ``dst``, ``setup_ns`` (connect started -> established); at the client proxy also
  ``strategy``, ``path`` (winner path), ``local`` (the winner's address), ``first_bytes`` (client
  bytes sent with the header) and ``race`` (the connect's events, each ``t_ns``/``what``/``path``/
  ``detail``).
* ``refused``: ``reason`` (the HAAP's malformed header or forbidden destination; the client proxy's
  missing original destination).
* ``closed``: after both directions ended and the sockets are closed: ``dst``, ``bytes_up``
  (client -> destination, first data included), ``bytes_down``, ``strategy``, ``path``,
  ``subflows`` (client proxy: the most MPTCP subflows seen, sampled at 5, 10, 20, 40, 80 ms, then
  every 100 ms and at the end; None for plain TCP), ``error`` (None for an orderly end).

Experiment 2 takes a page load's end from the last ``closed`` line of the client proxy.
"""

from __future__ import annotations

import json
import time
from typing import IO, Any


class ConnLog:
    """Appends JSON lines to ``path`` (or nowhere when None)."""

    def __init__(self, path: str | None, role: str) -> None:
        self.role = role
        self.lines = 0
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def event(self, event: str, conn: str, **fields: Any) -> dict[str, Any]:
        """Write one line now and return it."""
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
