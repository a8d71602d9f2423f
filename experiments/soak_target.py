"""The served side of ``make soak``: a HAAP (kernel and userspace listeners) and a userspace echo
server on loopback, in one event loop watched for stalls, answering questions on stdin.

``python -m experiments.soak_target --header-timeout 1 --log FILE`` prints ``READY {json}`` with
the ports, then answers each line on stdin with one JSON line on stdout: ``stats`` (open file
descriptors, asyncio tasks, every table that a leak would grow, the event loop's worst stall
since the last ``reset-stall``), ``reset-stall``, ``quit``.

The echo server reads a whole stream, answers its SHA-256 and closes: well-behaved clients
verify every byte they sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from robe.proxy.connlog import ConnLog
from robe.proxy.haap import Haap, HaapConfig, parse_networks
from robe.proxy.streams import BoundedServer, raise_fd_limit
from robe.userspace import ServerHandle, UserspaceServer

STALL_TICK_S = 0.005


class StallMonitor:
    """How late a 5 ms timer fires: the longest time the event loop was busy with something else."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self.late: list[float] = []

    async def run(self) -> None:
        """Tick forever."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + STALL_TICK_S
            await asyncio.sleep(STALL_TICK_S)
            late_ms = (loop.time() - due) * 1000
            self.worst_ms = max(self.worst_ms, late_ms)
            self.late.append(late_ms)
            if len(self.late) > 200_000:
                del self.late[:100_000]

    def figures(self) -> dict[str, float]:
        """Worst and 99th percentile lateness (ms) since the last reset."""
        ordered = sorted(self.late)
        p99 = ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0
        return {"worst_ms": round(self.worst_ms, 2), "p99_ms": round(p99, 2), "ticks": len(ordered)}

    def reset(self) -> None:
        """Start measuring afresh."""
        self.worst_ms, self.late = 0.0, []


def server_tables(server: UserspaceServer) -> dict[str, int]:
    """Sizes of everything a userspace server keeps per subflow or connection."""
    sans_io = server.server
    return {"subflows": len(server.transports), "handles": len(server.handles),
            "connections": len(sans_io.connections), "tokens": len(sans_io.by_token),
            "owners": len(sans_io.owner), "unclassified": len(sans_io.unclassified),
            "deadlines": len(server.deadlines), "handler_tasks": len(server.handler_tasks)}  # fmt: skip


def open_fds() -> int:
    """File descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    """Resident memory (KiB)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def serve(header_timeout_s: float, max_connections: int, log_path: str | None) -> None:
    """Run until ``quit`` (or stdin closes)."""
    log = ConnLog(log_path, "haap")
    config = HaapConfig(port=0, bind="127.0.0.1", user_port=0, allow=parse_networks(["127.0.0.0/8"]),
                        header_timeout_s=header_timeout_s, max_connections=max_connections)  # fmt: skip
    haap = Haap(config, log)
    await haap.start()
    echoed = {"streams": 0, "bytes": 0, "reset": 0}

    async def echo(handle: ServerHandle) -> None:
        stream = echo_server.stream(handle)
        digest = hashlib.sha256()
        try:
            while chunk := await stream.read():
                digest.update(chunk)
                echoed["bytes"] += len(chunk)
            stream.write(digest.hexdigest().encode() + b"\n")
            stream.write_eof()
            await stream.close()
            echoed["streams"] += 1
        except OSError:
            echoed["reset"] += 1
            stream.abort()

    echo_server = BoundedServer(on_connection=echo, handshake_timeout_s=header_timeout_s,
                                max_subflows=max_connections)  # fmt: skip
    listener = await echo_server.listen("127.0.0.1", 0)
    echo_port = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    monitor = StallMonitor()
    ticking = asyncio.create_task(monitor.run())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ready = {"pid": os.getpid(), "haap": haap.port, "haap_user": haap.user_port, "echo": echo_port}
    print("READY " + json.dumps(ready), flush=True)
    try:
        while line := (await reader.readline()).strip():
            if line == b"stats":
                answer: dict[str, Any] = {
                    "t": time.monotonic(), "fds": open_fds(), "tasks": len(asyncio.all_tasks()), "rss_kib": rss_kib(),
                    "haap": {"relays": len(haap.connections), "kernel_open": haap.kernel_open,
                             "refused_busy": haap.refused_busy, "accepted": haap.count},
                    "haap_user": {**server_tables(haap.user_server), "timed_out": haap.user_server.timed_out,
                                  "refused": haap.user_server.refused},
                    "echo": {**server_tables(echo_server), "timed_out": echo_server.timed_out, **echoed},
                    "stall": monitor.figures(),
                }  # fmt: skip
            elif line == b"reset-stall":
                monitor.reset()
                answer = {"ok": True}
            elif line == b"quit":
                break
            else:
                answer = {"error": f"unknown command {line!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        ticking.cancel()
        listener.close()
        await haap.stop()
        log.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m experiments.soak_target", description=__doc__.splitlines()[0])
    parser.add_argument("--header-timeout", type=float, default=1.0)
    parser.add_argument("--max-connections", type=int, default=2048)
    parser.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(serve(args.header_timeout, args.max_connections, args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
