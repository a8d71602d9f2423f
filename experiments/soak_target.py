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

import asyncio
import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from robe.proxy.connlog import ConnLog
from robe.proxy.haap import Haap, HaapConfig, parse_networks
from robe.proxy.streams import BoundedServer, raise_fd_limit
from robe.userspace import ServerHandle, UserspaceServer
from robe_lab.cliparse import command_parser

STALL_TICK_S = 0.005
SLOW_CALLBACK_S = 0.010  # callbacks that ran longer are kept (the slowest few) with what they were
SLOWEST_KEPT = 8


class StallMonitor:
    """How late a 5 ms timer fires: the longest time the event loop did not get back to it.

    Each tick also records the CPU time this process used meanwhile. A tick's lateness (wall
    clock) is what a connection waiting on the loop sees; its CPU time is the part our own code
    ran: the rest the process spent waiting for a core (the load generator, the kernel and the
    other processes of a 2-core machine share them), which the control loop measures on its own.
    A tick late by 200 ms during which the process used 45 ms of CPU and was preempted 391 times
    was mostly waiting, not running our code.

    Lateness and CPU time are counted in fixed histograms (0.1 ms bins up to 5 s): a long run
    costs the instrument no memory, so the served side's RSS is the served side's.
    """

    BIN_MS = 0.1
    BINS = 50_000
    worst_preempted: int  # involuntary context switches during the worst tick
    worst_ms: float
    worst_cpu_ms: float
    worst_busy_ms: float  # the tick with the most CPU time, and its lateness
    worst_busy_wall_ms: float
    late: list[int]
    busy: list[int]
    ticks: int
    slow_count: int
    slowest: list[tuple[float, float, str]]

    def __init__(self) -> None:
        self.reset()

    async def run(self) -> None:
        """Tick forever."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + STALL_TICK_S
            cpu, switches = time.process_time(), _preempted()
            await asyncio.sleep(STALL_TICK_S)
            late_ms = (loop.time() - due) * 1000
            cpu_ms = (time.process_time() - cpu) * 1000
            if late_ms > self.worst_ms:
                self.worst_ms, self.worst_cpu_ms = late_ms, cpu_ms
                self.worst_preempted = _preempted() - switches
            if cpu_ms > self.worst_busy_ms:
                self.worst_busy_ms, self.worst_busy_wall_ms = cpu_ms, late_ms
            self.late[self._bin(late_ms)] += 1
            self.busy[self._bin(cpu_ms)] += 1
            self.ticks += 1

    def _bin(self, ms: float) -> int:
        return min(self.BINS - 1, max(0, int(ms / self.BIN_MS)))

    def _p99(self, histogram: list[int]) -> float:
        """The 99th percentile (upper edge of its bin, ms)."""
        wanted, seen = 0.99 * self.ticks, 0
        for index, count in enumerate(histogram):
            seen += count
            if count and seen >= wanted:
                return (index + 1) * self.BIN_MS
        return 0.0

    def figures(self) -> dict[str, Any]:
        """Worst and 99th percentile lateness and CPU per tick (ms) since the last reset; the slowest callbacks."""
        return {"worst_ms": round(self.worst_ms, 2), "worst_cpu_ms": round(self.worst_cpu_ms, 2),
                "worst_preempted": self.worst_preempted,
                "p99_ms": round(self._p99(self.late), 2), "ticks": self.ticks,
                "worst_busy_ms": round(self.worst_busy_ms, 2), "worst_busy_wall_ms": round(self.worst_busy_wall_ms, 2),
                "p99_busy_ms": round(self._p99(self.busy), 2),
                "callbacks_over_10ms": self.slow_count,
                "slowest_callbacks": [{"ms": round(ms, 2), "cpu_ms": round(cpu, 2), "callback": what}
                                      for ms, cpu, what in sorted(self.slowest, reverse=True)]}  # fmt: skip

    def reset(self) -> None:
        """Start measuring afresh."""
        self.worst_preempted = 0
        self.worst_ms, self.worst_cpu_ms = 0.0, 0.0
        self.worst_busy_ms, self.worst_busy_wall_ms = 0.0, 0.0
        self.late = [0] * self.BINS
        self.busy = [0] * self.BINS
        self.ticks = 0
        self.slow_count = 0
        self.slowest = []

    def callback_ran(self, seconds: float, cpu_seconds: float, what: Callable[[], str]) -> None:
        """One event-loop callback took ``seconds`` (called for the slow ones only)."""
        self.slow_count += 1
        entry = (seconds * 1000, cpu_seconds * 1000, what())
        if len(self.slowest) < SLOWEST_KEPT:
            self.slowest.append(entry)
        elif entry[0] > min(self.slowest)[0]:
            self.slowest.remove(min(self.slowest))
            self.slowest.append(entry)


def _preempted() -> int:
    """Involuntary context switches of this process so far (the kernel took the core away)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def time_callbacks(monitor: StallMonitor) -> None:
    """Time every event-loop callback; report those over ``SLOW_CALLBACK_S`` to ``monitor``.

    A measuring instrument for this benchmark only (it wraps asyncio's ``Handle._run``, about a
    microsecond per callback): it names what held the loop, which a late tick cannot.
    """
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        callback, args = handle._callback, handle._args  # type: ignore[attr-defined]
        wall, cpu = time.perf_counter(), time.process_time()
        run(handle)
        took = time.perf_counter() - wall
        if took > SLOW_CALLBACK_S:
            monitor.callback_ran(took, time.process_time() - cpu, lambda: _describe(callback, args))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]


def _describe(callback: Any, args: Any) -> str:
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return f"task {owner.get_coro()!r}"[:200]
    return f"{callback!r}"[:200]


def server_tables(server: UserspaceServer) -> dict[str, int]:
    """Sizes of everything a userspace server keeps per subflow or connection."""
    sans_io = server.server
    return {"subflows": len(server.transports), "handles": len(server.handles),
            "connections": len(sans_io.connections), "tokens": len(sans_io.by_token),
            "owners": len(sans_io.owner), "unclassified": len(sans_io.unclassified),
            "deadlines": len(server.deadlines), "handler_tasks": len(server.handler_tasks)}  # fmt: skip


def leftovers(server: UserspaceServer, limit: int = 20) -> list[dict[str, Any]]:
    """What a userspace server still holds, per connection: enough to tell a leak from a closing."""
    described = []
    for key_a, conn in list(server.server.connections.items())[:limit]:
        handle = server.handles.get(key_a)
        described.append({
            "key_a": key_a,
            "subflows": {sid: {"state": str(flow.state), "transport": _transport_state(server, sid)}
                         for sid, flow in conn.subflows.items()},
            "ended": conn.ended, "fin_sent": conn.fin_sent,
            "handle": None if handle is None else {"ended": handle.ended, "reset": handle.reset,
                                                   "inbox": len(handle.inbox)},
        })  # fmt: skip
    return described


def _transport_state(server: UserspaceServer, sid: int) -> str:
    transport = server.transports.get(sid)
    if transport is None:
        return "none"
    return "closing" if transport.is_closing() else "open"


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
    time_callbacks(monitor)

    def stats() -> dict[str, Any]:
        return {
            "t": time.monotonic(), "fds": open_fds(), "tasks": len(asyncio.all_tasks()), "rss_kib": rss_kib(),
            "haap": {"relays": len(haap.connections), "kernel_open": haap.kernel_open,
                     "refused_busy": haap.refused_busy, "accepted": haap.count},
            "haap_user": {**server_tables(haap.user_server), "timed_out": haap.user_server.timed_out,
                          "refused": haap.user_server.refused},
            "echo": {**server_tables(echo_server), "timed_out": echo_server.timed_out, **echoed},
            "stall": monitor.figures(),
        }  # fmt: skip

    def left() -> dict[str, Any]:
        return {"haap_user": leftovers(haap.user_server), "echo": leftovers(echo_server),
                "tasks": sorted(repr(t.get_coro())[:100] for t in asyncio.all_tasks())[:40]}  # fmt: skip

    ready = {"pid": os.getpid(), "haap": haap.port, "haap_user": haap.user_port, "echo": echo_port}
    try:
        await answer_questions(monitor, ready, {b"stats": stats, b"leftovers": left})
    finally:
        listener.close()
        await haap.stop()
        log.close()


async def control() -> None:
    """The control: an event loop that only ticks. Its lateness is what the machine itself (other
    processes, the kernel, the hypervisor) costs any event loop at that moment, our code aside."""
    monitor = StallMonitor()
    await answer_questions(monitor, {"pid": os.getpid()}, {b"stats": lambda: {"stall": monitor.figures()}})


async def answer_questions(
    monitor: StallMonitor, ready: dict[str, Any], commands: dict[bytes, Callable[[], dict[str, Any]]]
) -> None:
    """Tick the stall monitor; print ``READY``; answer stdin's lines (``reset-stall``, ``quit`` and
    ``commands``) until ``quit`` or the end of stdin."""
    ticking = asyncio.create_task(monitor.run())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("READY " + json.dumps(ready), flush=True)
    try:
        while line := (await reader.readline()).strip():
            if line == b"reset-stall":
                monitor.reset()
                answer: dict[str, Any] = {"ok": True}
            elif line == b"quit":
                break
            elif line in commands:
                answer = commands[line]()
            else:
                answer = {"error": f"unknown command {line!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        ticking.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = command_parser("experiments.soak_target", __doc__)
    parser.add_argument("--header-timeout", type=float, default=1.0)
    parser.add_argument("--max-connections", type=int, default=2048)
    parser.add_argument("--log", default=None)
    parser.add_argument("--control", action="store_true", help="only tick (the stall measurement's control)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(control() if args.control else serve(args.header_timeout, args.max_connections, args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
