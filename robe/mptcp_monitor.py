"""The kernel's MPTCP events as JSON lines with one clock: ``python -m robe.mptcp_monitor --log FILE``.

Runs ``ip mptcp monitor`` (the in-kernel path manager's netlink events: a connection ``CREATED``,
``ESTABLISHED``, ``CLOSED``; a subflow ``SF_ESTABLISHED``, ``SF_CLOSED``, ``SF_PRIORITY``) in the
current network namespace and appends one JSON line per event, stamped with
``time.monotonic_ns()`` as soon as it is read (the proxies' connection logs use the same clock), so
an experiment sees when each subflow of each connection became established without polling the
sockets. Line-buffered through ``stdbuf``; prints ``READY`` once the monitor runs; SIGTERM stops it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from robe_lab.cliparse import command_parser

_EVENT = re.compile(r"^\[\s*([A-Z_]+)\]\s*(.*)$")


def parse_event(line: str) -> dict[str, Any] | None:
    """One line of ``ip mptcp monitor`` as a dict (``event`` plus its ``key=value`` fields), or None."""
    match = _EVENT.match(line.strip())
    if match is None:
        return None
    event: dict[str, Any] = {"event": match.group(1)}
    for item in match.group(2).split():
        key, sep, value = item.partition("=")
        if sep:
            event[key] = int(value) if value.isdigit() and key != "token" else value
    return event


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
            now = time.monotonic_ns()
            event = parse_event(line)
            if event is not None:
                log.write(json.dumps({"t_ns": now, **event}) + "\n")
                log.flush()
    return 0 if proc.wait() in (0, -signal.SIGTERM) else 1


if __name__ == "__main__":
    sys.exit(main())
