"""The kernel's MPTCP events as JSON lines with one clock: ``python -m robe.mptcp_monitor --log FILE``.

Runs ``ip mptcp monitor`` (the in-kernel path manager's netlink events: a connection ``CREATED``,
``ESTABLISHED``, ``CLOSED``; a subflow ``SF_ESTABLISHED``, ``SF_CLOSED``, ``SF_PRIORITY``) in the
current network namespace and appends one JSON line per event, stamped with
``time.monotonic_ns()`` as soon as it is read (the proxies' connection logs use the same clock), so
an experiment sees when each subflow of each connection became established without polling the
sockets. Line-buffered through ``stdbuf``; prints ``READY`` once the monitor runs; SIGTERM stops it.
The records (``MptcpEvent``) and their reader (``read_events``) are here, beside the writer.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from robe_lab.cliparse import command_parser
from robe_lab.records import RecordError, build, read_appended

_EVENT = re.compile(r"^\[\s*([A-Z_]+)\]\s*(.*)$")


@dataclass(frozen=True)
class MptcpEvent:
    """One event of the in-kernel path manager, stamped ``t_ns`` when read: ``event`` is the kernel's
    name (``CREATED``, ``ESTABLISHED``, ``CLOSED``, ``SF_ESTABLISHED``, ``SF_CLOSED``, ...), the
    addresses and ports are the subflow's (IPv4), ``fields`` every other ``key=value`` it printed."""

    t_ns: int
    event: str
    token: str | None = None
    saddr4: str | None = None
    daddr4: str | None = None
    sport: int | None = None
    dport: int | None = None
    fields: dict[str, str | int] = dc_field(default_factory=dict)

    def to_line(self) -> str:
        """The log's line: one flat JSON object (``fields`` beside the named ones)."""
        named = {k: v for k, v in asdict(self).items() if k != "fields" and v is not None}
        return json.dumps({**self.fields, **named})

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "MPTCP monitor log") -> MptcpEvent:
        """One line of the log, checked (``RecordError`` naming the field otherwise)."""
        named = {f.name for f in dataclasses.fields(cls)} - {"fields"}
        extra = {k: v for k, v in data.items() if k not in named}
        bad = {k: v for k, v in extra.items() if not isinstance(v, str | int) or isinstance(v, bool)}
        if bad:
            raise RecordError(f"{where}: {', '.join(f'{k}={v!r}' for k, v in bad.items())}: not a string or integer")
        return build(cls, {**{k: v for k, v in data.items() if k in named}, "fields": extra}, where)


def parse_event(line: str, t_ns: int = 0) -> MptcpEvent | None:
    """One line of ``ip mptcp monitor`` as an event read at ``t_ns``, or None when it is not one."""
    match = _EVENT.match(line.strip())
    if match is None:
        return None
    values: dict[str, Any] = {"t_ns": t_ns, "event": match.group(1)}
    for item in match.group(2).split():
        key, sep, value = item.partition("=")
        if sep:
            values[key] = int(value) if value.isdigit() and key != "token" else value
    return MptcpEvent.from_dict(values, "ip mptcp monitor")


def read_events(path: Path, offset: int) -> tuple[list[MptcpEvent], int]:
    """The events appended to the log at ``path`` since byte ``offset``, and the new offset."""
    lines, end = read_appended(path, offset)
    return [MptcpEvent.from_dict(line, str(path)) for line in lines], end


def monitor_command() -> list[str]:
    """``ip mptcp monitor`` with its output line-buffered (it writes to a pipe)."""
    return ["stdbuf", "-oL", "ip", "mptcp", "monitor"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: copy the monitor's events into the log until SIGTERM or SIGINT."""
    parser = command_parser("robe.mptcp_monitor", __doc__)
    parser.add_argument("--log", required=True, help="JSON-lines file (appended)")
    args = parser.parse_args(argv)
    proc = subprocess.Popen(monitor_command(), stdout=subprocess.PIPE, text=True, bufsize=1)

    def stop(_signum: int, _frame: object) -> None:
        proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    assert proc.stdout is not None
    with open(args.log, "a", encoding="utf-8") as log:
        print("READY", flush=True)
        for line in proc.stdout:
            event = parse_event(line, time.monotonic_ns())
            if event is not None:
                log.write(event.to_line() + "\n")
                log.flush()
    return 0 if proc.wait() in (0, -signal.SIGTERM) else 1


if __name__ == "__main__":
    sys.exit(main())
