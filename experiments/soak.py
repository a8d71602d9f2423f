"""``make soak``: the HAAP and a userspace server on loopback, for a bounded time, under well-behaved
transfers and hostile clients at once; do they verify every byte, cut every hostile client off,
stay responsive, and end with exactly the resources they started with?

The served side runs in its own process (``experiments.soak_target``: the HAAP's kernel and
userspace listeners and a userspace echo server, with an event-loop stall monitor); this process
runs an origin server and the clients:

- well-behaved: transfers through the HAAP to the origin with every strategy (kernel ``tcp``,
  ``mptcp``, ``robe-sim``; userspace ``mptcp-user``, ``robe-downgrade``, ``robe-bbm``, ``robe-esim``)
  and to the echo server, random sizes, every byte checked (SHA-256 both ways);
- hostile: a userspace connection ended by an RST frame, a kernel one by a TCP reset, garbage,
  silent (nothing, or three bytes of a CAP), a header dripped one byte at a time, thousands of
  one-byte out-of-order segments, fifty nested headers naming the HAAP itself. Each must be ended
  by the server within its time-outs.

Before and after (once the clients are gone and the time-outs have passed) it reads the served
side's open file descriptors, asyncio tasks and every per-connection table: they must return to
the baseline. The served side's event loop must never run its own code for ``STALL_TARGET_MS`` or
more without getting back to a 5 ms timer (CPU time within one tick: what our code holds the loop
for). The wall-clock lateness of that timer is reported too, next to a control loop's in an idle
process: on a shared 2-core machine it also holds the time the process waited for a core, which
no code of ours can remove. Also measured: the reassembly of 20,000 one-byte out-of-order segments
and the served side's RSS by quarter of the run (a leak climbs; a busy server plateaus). Writes
``results/soak/<stamp>-soak/`` (``soak.json``, ``metadata.json``) and exits non-zero when a check fails.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.lifecycle import run_guarded
from experiments.metadata import PROJECT_ROOT, base_metadata, new_run_dir, write_json
from robe.protocol import crypto
from robe.protocol.frames import Cap, Data, ResetReason, Rst
from robe.protocol.reassembly import Reassembly
from robe.proxy import convert
from robe.proxy.aio_connect import open_multipath
from robe.proxy.connlog import read_events
from robe.proxy.streams import raise_fd_limit
from robe_lab.cliparse import command_parser
from topologies.startup import wait_ready

RESULTS_BASE = PROJECT_ROOT / "results" / "soak"
SOURCES = ("127.0.0.1", "127.0.0.2")
KERNEL_STRATEGIES = ("tcp", "mptcp", "robe-sim")
USER_STRATEGIES = ("mptcp-user", "robe-downgrade", "robe-bbm", "robe-esim")
STALL_TARGET_MS = 50.0
HOSTILE_KINDS = ("rst-frame", "tcp-reset", "garbage", "silent", "drip", "tiny-segments", "frame-flood",
                 "nested-headers")  # fmt: skip
FLOOD_FRAMES = 20_000
SAMPLE_EVERY_S = 1.0
#: The tables that must come back to exactly their baseline (everything per subflow or connection).
TABLES = ("relays", "kernel_open", "subflows", "handles", "connections", "tokens", "owners", "unclassified",
          "deadlines", "handler_tasks")  # fmt: skip


def download(size: int) -> bytes:
    """The origin's deterministic answer body of ``size`` bytes."""
    return random.Random(size).randbytes(size)


async def origin_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads ``N\\n`` and a body until EOF; answers the request's SHA-256 and ``N`` bytes."""
    try:
        request = await reader.read()
        size = int(request.split(b"\n", 1)[0])
        writer.write(hashlib.sha256(request).hexdigest().encode() + b"\n" + download(size))
        await writer.drain()
    except (OSError, ValueError):
        pass
    finally:
        writer.close()


def header(port: int) -> bytes:
    """A Convert header naming 127.0.0.1:``port``."""
    return convert.encode(convert.Destination(ipaddress.ip_address("127.0.0.1"), port))


@dataclass
class Tally:
    """What the clients did."""

    transfers: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_verified: int = 0
    failures: list[str] = field(default_factory=list)
    hostile: collections.Counter[str] = field(default_factory=collections.Counter)
    hostile_cut_off: collections.Counter[str] = field(default_factory=collections.Counter)
    hostile_slow: list[str] = field(default_factory=list)


class Target:
    """The served side's process and its stdin/stdout question channel."""

    def __init__(self, args: list[str], what: str) -> None:
        argv = [sys.executable, "-m", "experiments.soak_target", *args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                                     env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
        line = wait_ready(self.proc, what, "READY ")
        self.ports: dict[str, int] = json.loads(line[len("READY ") :])

    def ask(self, command: str) -> dict[str, Any]:
        """One question, one JSON answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def stop(self) -> None:
        """Ask it to quit; kill it if it does not."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def tables(stats: dict[str, Any]) -> dict[str, int]:
    """The per-connection tables of both servers, summed by name."""
    out = {"relays": stats["haap"]["relays"], "kernel_open": stats["haap"]["kernel_open"]}
    for side in ("haap_user", "echo"):
        for name in TABLES[2:]:
            out[name] = out.get(name, 0) + stats[side][name]
    return out


# -- clients -------------------------------------------------------------------------------------


async def read_all(stream: Any, limit_s: float = 30.0) -> bytes:
    """Everything until EOF."""
    received = bytearray()
    async with asyncio.timeout(limit_s):
        while chunk := await stream.read():
            received += chunk
    return bytes(received)


async def haap_transfer(ports: dict[str, int], origin: int, rng: random.Random, tally: Tally) -> None:
    """Through the HAAP to the origin with a random strategy; both directions checked."""
    strategy = rng.choice(KERNEL_STRATEGIES + USER_STRATEGIES)
    port = ports["haap_user"] if strategy in USER_STRATEGIES else ports["haap"]
    size = rng.randrange(0, 400_000)
    request = f"{size}\n".encode() + rng.randbytes(rng.randrange(0, 150_000))
    stream = await open_multipath(strategy, ("127.0.0.1", port), SOURCES, header(origin) + request[:1000],
                                  timer_s=0.5, timeout_s=10)  # fmt: skip
    stream.write(request[1000:])
    await stream.drain()
    stream.write_eof()
    answer = await read_all(stream)
    await stream.close()
    line, _, body = answer.partition(b"\n")
    if line.decode() != hashlib.sha256(request).hexdigest() or body != download(size):
        raise ValueError(f"{strategy}: answer does not match ({len(body)} of {size} bytes)")
    tally.transfers[f"haap/{strategy}"] += 1
    tally.bytes_verified += len(request) + len(body)


async def echo_transfer(ports: dict[str, int], _origin: int, rng: random.Random, tally: Tally) -> None:
    """To the userspace echo server; the SHA-256 it answers must be that of what we sent."""
    strategy = rng.choice(USER_STRATEGIES)
    data = rng.randbytes(rng.randrange(1, 300_000))
    stream = await open_multipath(strategy, ("127.0.0.1", ports["echo"]), SOURCES, data[:500], timeout_s=10)
    stream.write(data[500:])
    await stream.drain()
    stream.write_eof()
    answer = await read_all(stream)
    await stream.close()
    if answer.strip().decode() != hashlib.sha256(data).hexdigest():
        raise ValueError(f"echo {strategy}: digest does not match")
    tally.transfers[f"echo/{strategy}"] += 1
    tally.bytes_verified += len(data)


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit_s: float) -> bool:
    """Read until the server ends the connection; whether it did so within ``limit_s``."""
    try:
        async with asyncio.timeout(limit_s):
            while await reader.read(65536):
                pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    finally:
        _abort(writer)


def _cap_with_request(key_a: int, origin: int) -> bytes:
    payload = header(origin) + b"1000\n"
    return Cap(1, 0, key_a).encode() + Data(crypto.idsn(key_a) % (1 << 64), payload).encode()


async def hostile(kind: str, ports: dict[str, int], origin: int, rng: random.Random, limit_s: float) -> bool:
    """One hostile client of ``kind``; whether the server cut it off within ``limit_s``."""
    user, kernel = ports["haap_user"], ports["haap"]
    if kind == "rst-frame":  # a relayed userspace connection ended by an RST frame
        reader, writer = await asyncio.open_connection("127.0.0.1", user)
        writer.write(_cap_with_request(rng.getrandbits(63), origin))
        await asyncio.sleep(0.05)
        writer.write(Rst(ResetReason.UNSPECIFIED).encode())
        return await _until_closed(reader, writer, limit_s)
    if kind == "tcp-reset":  # a kernel connection with half a request, then a TCP reset
        reader, writer = await asyncio.open_connection("127.0.0.1", kernel)
        writer.write(header(origin) + b"5000\nabc")
        await asyncio.sleep(0.05)
        _abort(writer)
        return True
    if kind == "garbage":
        reader, writer = await asyncio.open_connection("127.0.0.1", rng.choice((user, kernel, ports["echo"])))
        writer.write(rng.randbytes(rng.randrange(1, 300)))
        return await _until_closed(reader, writer, limit_s)
    if kind == "silent":  # nothing, or three bytes of a CAP, then silence
        reader, writer = await asyncio.open_connection("127.0.0.1", rng.choice((user, kernel, ports["echo"])))
        if rng.random() < 0.5:
            writer.write(b"\x01\x00\x00")
        return await _until_closed(reader, writer, limit_s)
    if kind == "drip":  # a header one byte at a time, each well inside any per-read timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", kernel)
        started = time.monotonic()
        try:
            for byte in header(origin):
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
                if time.monotonic() - started > limit_s:
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass
        return await _until_closed(reader, writer, max(0.1, limit_s - (time.monotonic() - started)))
    if kind == "tiny-segments":  # one byte at every other sequence number, after a valid CAP
        key_a = rng.getrandbits(63)
        reader, writer = await asyncio.open_connection("127.0.0.1", rng.choice((user, ports["echo"])))
        base = crypto.idsn(key_a)
        frames = b"".join(Data((base + 2 * k + 1) % (1 << 64), b"x").encode() for k in range(6000))
        writer.write(Cap(1, 0, key_a).encode() + frames)
        return await _until_closed(reader, writer, limit_s)
    if kind == "frame-flood":  # 20,000 one-byte DATA frames in order (260 KB), then an RST frame
        key_a = rng.getrandbits(63)
        reader, writer = await asyncio.open_connection("127.0.0.1", rng.choice((user, ports["echo"])))
        first = header(origin)  # the HAAP relays the flood to the origin; the echo server just reads it
        base = crypto.idsn(key_a) + len(first)
        frames = b"".join(Data((base + k) % (1 << 64), b"x").encode() for k in range(FLOOD_FRAMES))
        writer.write(Cap(1, 0, key_a).encode() + Data(crypto.idsn(key_a) % (1 << 64), first).encode() + frames)
        await writer.drain()
        writer.write(Rst(ResetReason.UNSPECIFIED).encode())
        return await _until_closed(reader, writer, limit_s)
    if kind == "nested-headers":  # fifty headers naming the HAAP itself, then the origin
        reader, writer = await asyncio.open_connection("127.0.0.1", kernel)
        writer.write(header(kernel) * 50 + header(origin) + b"1\n")
        return await _until_closed(reader, writer, limit_s)
    raise ValueError(f"unknown hostile kind {kind!r}")


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What one soak run does."""

    duration_s: float
    well_behaved: int
    hostile: int
    header_timeout_s: float
    seed: int
    out: Path | None


async def run_clients(options: Options, ports: dict[str, int], origin: int, tally: Tally) -> None:
    """Client loops until the deadline; each loop does one thing after another."""
    deadline = time.monotonic() + options.duration_s
    limit_s = options.header_timeout_s + 2.0  # a hostile client must be cut off by then

    async def loop(index: int, step: Callable[[random.Random], Awaitable[None]]) -> None:
        rng = random.Random(options.seed * 1000 + index)
        while time.monotonic() < deadline:
            await step(rng)

    async def good(rng: random.Random) -> None:
        transfer = haap_transfer if rng.random() < 0.7 else echo_transfer
        try:
            await transfer(ports, origin, rng, tally)
        except (OSError, TimeoutError, ValueError) as err:
            tally.failures.append(f"{transfer.__name__}: {type(err).__name__}: {err}")

    async def bad(rng: random.Random) -> None:
        kind = rng.choice(HOSTILE_KINDS)
        tally.hostile[kind] += 1
        try:
            cut_off = await hostile(kind, ports, origin, rng, limit_s)
        except OSError:  # refused at connect (a listener at its cap) counts as cut off
            cut_off = True
        if cut_off:
            tally.hostile_cut_off[kind] += 1
        else:
            tally.hostile_slow.append(kind)

    loops = [loop(i, good) for i in range(options.well_behaved)]
    loops += [loop(1000 + i, bad) for i in range(options.hostile)]
    await asyncio.gather(*loops)


def reassembly_benchmark(segments: int = 20_000) -> dict[str, float]:
    """Seconds to take ``segments`` one-byte segments, each with a gap before it, then the rest."""
    stream = Reassembly(next_dsn=0, window=1 << 20, max_segments=0)
    started = time.perf_counter()
    for k in range(segments):
        stream.add(2 * k + 1, b"x")
    held = time.perf_counter() - started
    for k in range(segments):
        stream.add(2 * k, b"y")
    total = time.perf_counter() - started
    assert stream.next_dsn == 2 * segments and stream.buffered == 0
    return {"segments": segments, "out_of_order_s": round(held, 4), "with_gaps_filled_s": round(total, 4)}


def settle(target: Target, baseline: dict[str, Any], limit_s: float) -> tuple[dict[str, Any], float]:
    """The served side's figures once every table is back to its baseline, and how long that took.

    Connections still closing when the clients stop are not leaks: this waits for them, at most
    ``limit_s`` (longer than any time-out of the served side), polling every 0.2 s.
    """
    started = time.monotonic()
    while True:
        stats = target.ask("stats")
        waited = time.monotonic() - started
        if (tables(stats) == tables(baseline) and stats["fds"] <= baseline["fds"]
                and stats["tasks"] <= baseline["tasks"]) or waited > limit_s:  # fmt: skip
            return stats, round(waited, 2)
        time.sleep(0.2)


class Peaks:
    """The served side's largest figures, sampled every ``SAMPLE_EVERY_S`` during the run."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.samples = 0
        self.started = time.monotonic()
        #: One row per sample (seconds since the start, fds, tasks, RSS KiB, subflows, relays): a
        #: leak shows as a climb over the whole run, a busy server as a plateau.
        self.timeline: list[tuple[float, int, int, int, int, int]] = []

    def add(self, stats: dict[str, Any]) -> None:
        """Take one sample."""
        self.samples += 1
        figures = {"fds": stats["fds"], "tasks": stats["tasks"], "rss_kib": stats["rss_kib"], **tables(stats)}
        for name, value in figures.items():
            self.values[name] = max(value, self.values.get(name, 0))
        self.timeline.append((round(time.monotonic() - self.started, 1), figures["fds"], figures["tasks"],
                              figures["rss_kib"], figures["subflows"], figures["relays"]))  # fmt: skip

    def rss_by_quarter(self) -> list[int]:
        """Largest RSS (KiB) in each quarter of the run: a leak keeps climbing, a busy server plateaus."""
        if len(self.timeline) < 4:
            return [row[3] for row in self.timeline]
        size = len(self.timeline) / 4
        return [max(row[3] for row in self.timeline[round(q * size) : round((q + 1) * size)]) for q in range(4)]

    async def sample(self, target: Target, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self.add(await loop.run_in_executor(None, target.ask, "stats"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


def soak(options: Options) -> tuple[dict[str, Any], bool]:
    """Run it; the report and whether every check passed."""
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        log = Path(scratch) / "haap.jsonl"
        target = Target(["--header-timeout", f"{options.header_timeout_s:g}", "--log", str(log)], "soak target")
        control = Target(["--control"], "soak control")
        try:
            report = asyncio.run(_soak(options, target, control))
        finally:
            target.stop()
            control.stop()
        refused: collections.Counter[str] = collections.Counter()
        for event in read_events(log, 0)[0]:  # the HAAP's connection log, read by its own reader
            if event["event"] == "refused":
                refused[_reason_kind(event.get("reason", ""))] += 1
        report["haap_refusals"] = dict(refused.most_common())
    checks = report["checks"]
    return report, all(checks.values())


def _reason_kind(reason: str) -> str:
    for kind in ("malformed header", "no complete header", "the HAAP itself", "closed after", "too many connections",
                 "outside the allowed", "loopback"):  # fmt: skip
        if kind in reason:
            return kind
    return reason[:60]


async def _soak(options: Options, target: Target, control: Target) -> dict[str, Any]:
    origin_server = await asyncio.start_server(origin_handler, "127.0.0.1", 0)
    origin = origin_server.sockets[0].getsockname()[1]
    ports = target.ports
    tally = Tally()
    # Warm up: one transfer of each kind, so lazily created things exist before the baseline.
    for strategy_round in range(3):
        rng = random.Random(strategy_round)
        await haap_transfer(ports, origin, rng, tally)
        await echo_transfer(ports, origin, rng, tally)
    loop = asyncio.get_running_loop()
    baseline, _ = await loop.run_in_executor(None, settle, target, target.ask("stats"), 5.0)
    await loop.run_in_executor(None, target.ask, "reset-stall")
    await loop.run_in_executor(None, control.ask, "reset-stall")
    peaks, stop = Peaks(), asyncio.Event()
    sampler = asyncio.create_task(peaks.sample(target, stop))
    started = time.monotonic()
    try:
        await run_clients(options, ports, origin, tally)
    finally:
        stop.set()
        await sampler
    elapsed = time.monotonic() - started
    during = await loop.run_in_executor(None, target.ask, "stats")
    machine = (await loop.run_in_executor(None, control.ask, "stats"))["stall"]
    settle_limit_s = options.header_timeout_s * 2 + 10
    end, settled_s = await loop.run_in_executor(None, settle, target, baseline, settle_limit_s)
    left = await loop.run_in_executor(None, target.ask, "leftovers")
    origin_server.close()
    tables_start, tables_end = tables(baseline), tables(end)
    hostile_total = sum(tally.hostile.values())
    held_ms = during["stall"]["worst_busy_ms"]
    checks = {
        "every transfer verified": not tally.failures,
        "every hostile client cut off in time": not tally.hostile_slow,
        "tables back to baseline": tables_start == tables_end,
        "file descriptors back to baseline": end["fds"] <= baseline["fds"],
        "tasks back to baseline": end["tasks"] <= baseline["tasks"],
        f"event loop never held by our code for {STALL_TARGET_MS:g} ms (CPU per tick)": held_ms < STALL_TARGET_MS,
    }
    return {
        "duration_s": round(elapsed, 1),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in options.__dict__.items()},
        "connections_handled": sum(tally.transfers.values()) + hostile_total,
        "well_behaved": {
            "transfers": sum(tally.transfers.values()),
            "by_kind": dict(sorted(tally.transfers.items())),
            "bytes_verified": tally.bytes_verified,
            "failures": tally.failures[:20],
            "failure_count": len(tally.failures),
        },
        "hostile": {
            "clients": hostile_total,
            "by_kind": dict(sorted(tally.hostile.items())),
            "cut_off_in_time": dict(sorted(tally.hostile_cut_off.items())),
            "not_cut_off": collections.Counter(tally.hostile_slow),
        },
        "served_side": {
            "start": {
                "fds": baseline["fds"],
                "tasks": baseline["tasks"],
                "rss_kib": baseline["rss_kib"],
                "tables": tables_start,
            },
            "end": {"fds": end["fds"], "tasks": end["tasks"], "rss_kib": end["rss_kib"], "tables": tables_end},
            "peak_during": {**peaks.values, "samples": peaks.samples},
            "rss_kib_by_quarter": peaks.rss_by_quarter(),
            "timeline_columns": ["t_s", "fds", "tasks", "rss_kib", "subflows", "relays"],
            "timeline": peaks.timeline,
            "settled_after_s": settled_s,
            "settle_limit_s": settle_limit_s,
            "userspace_handshake_timeouts": end["haap_user"]["timed_out"] + end["echo"]["timed_out"],
            "echo_streams": end["echo"]["streams"],
        },
        "stall": during["stall"],
        "control_stall": {k: v for k, v in machine.items() if k in ("worst_ms", "p99_ms", "ticks", "worst_preempted")},
        "stall_target_ms": STALL_TARGET_MS,
        "leftovers": left,
        "reassembly": reassembly_benchmark(),
        "checks": checks,
    }


def print_report(report: dict[str, Any]) -> None:
    """The figures, for a person."""
    good, bad, side = report["well_behaved"], report["hostile"], report["served_side"]
    print(f"soak: {report['duration_s']} s, {report['connections_handled']} connections handled")
    print(f"  well-behaved: {good['transfers']} transfers, {good['bytes_verified'] / 1e6:.1f} MB verified, "
          f"{good['failure_count']} failed")  # fmt: skip
    cut = sum(bad["cut_off_in_time"].values())
    kinds = ", ".join(f"{k} {v}" for k, v in bad["by_kind"].items())
    print(f"  hostile: {bad['clients']} clients, {cut} cut off in time ({kinds})")
    start, end, peak = side["start"], side["end"], side["peak_during"]
    print(
        f"  served side, start -> end (settled after {side['settled_after_s']} s): fds {start['fds']} -> "
        f"{end['fds']}, tasks {start['tasks']} -> {end['tasks']}, RSS {start['rss_kib']} -> {end['rss_kib']} KiB"
    )
    busy = {k: v for k, v in end["tables"].items() if v != start["tables"].get(k)}
    print(f"  per-connection tables: {busy or 'all back to baseline'}")
    print(f"  peak during the run: fds {peak.get('fds')}, tasks {peak.get('tasks')}, subflows {peak.get('subflows')}, "
          f"relays {peak.get('relays')}, RSS {peak.get('rss_kib')} KiB")  # fmt: skip
    print(f"  RSS, largest in each quarter of the run: {' -> '.join(map(str, side['rss_kib_by_quarter']))} KiB")
    stall = report["stall"]
    print(f"  event loop, our own code (CPU per 5 ms tick): worst {stall['worst_busy_ms']} ms (that tick late by "
          f"{stall['worst_busy_wall_ms']} ms), p99 {stall['p99_busy_ms']} ms")  # fmt: skip
    print(
        f"  event loop, wall clock: worst lateness {stall['worst_ms']} ms (CPU used meanwhile "
        f"{stall['worst_cpu_ms']} ms, preempted {stall['worst_preempted']} times), p99 {stall['p99_ms']} ms "
        f"over {stall['ticks']} ticks; {stall['callbacks_over_10ms']} callbacks over 10 ms of wall clock"
    )
    control = report["control_stall"]
    print(f"  control (an idle event loop in its own process, same time): worst {control['worst_ms']} ms, "
          f"p99 {control['p99_ms']} ms: what the machine itself costs any loop")  # fmt: skip
    for slow in stall["slowest_callbacks"][:3]:
        print(f"    {slow['ms']} ms (CPU {slow['cpu_ms']} ms): {slow['callback']}")
    bench = report["reassembly"]
    print(f"  reassembly: {bench['segments']} one-byte out-of-order segments in {bench['out_of_order_s']} s "
          f"({bench['with_gaps_filled_s']} s with the gaps filled)")  # fmt: skip
    for name, ok in report["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}: {name}")


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The measured figures a reader of ``metadata.json`` wants first (all of them: ``soak.json``)."""
    side, stall = report["served_side"], report["stall"]
    return {
        "duration_s": report["duration_s"],
        "connections_handled": report["connections_handled"],
        "transfers": report["well_behaved"]["transfers"],
        "bytes_verified": report["well_behaved"]["bytes_verified"],
        "transfer_failures": report["well_behaved"]["failure_count"],
        "hostile_clients": report["hostile"]["clients"],
        "hostile_cut_off_in_time": sum(report["hostile"]["cut_off_in_time"].values()),
        "fds_start_end_peak": [side["start"]["fds"], side["end"]["fds"], side["peak_during"].get("fds")],
        "tasks_start_end_peak": [side["start"]["tasks"], side["end"]["tasks"], side["peak_during"].get("tasks")],
        "tables_start": side["start"]["tables"],
        "tables_end": side["end"]["tables"],
        "settled_after_s": side["settled_after_s"],
        "rss_kib_start_end": [side["start"]["rss_kib"], side["end"]["rss_kib"]],
        "rss_kib_by_quarter": side["rss_kib_by_quarter"],
        "worst_loop_cpu_per_tick_ms": stall["worst_busy_ms"],
        "p99_loop_cpu_per_tick_ms": stall["p99_busy_ms"],
        "worst_stall_wall_ms": stall["worst_ms"],
        "worst_stall_wall_cpu_ms": stall["worst_cpu_ms"],
        "worst_stall_wall_preempted": stall["worst_preempted"],
        "p99_stall_wall_ms": stall["p99_ms"],
        "callbacks_over_10ms": stall["callbacks_over_10ms"],
        "control_worst_stall_ms": report["control_stall"]["worst_ms"],
        "stall_target_ms": STALL_TARGET_MS,
        "reassembly_20000_out_of_order_s": report["reassembly"]["out_of_order_s"],
        "checks": report["checks"],
    }


def parse_args(argv: list[str] | None = None) -> Options:
    """Command line -> Options."""
    parser = command_parser("experiments.soak", __doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--well-behaved", type=int, default=8, help="concurrent well-behaved clients (default 8)")
    parser.add_argument("--hostile", type=int, default=8, help="concurrent hostile clients (default 8)")
    parser.add_argument("--header-timeout", type=float, default=1.0, help="the servers' handshake/header time-out")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=RESULTS_BASE, help="results base folder ('-': do not store)")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 3600:
        parser.error(f"--duration={args.duration}: must be 1..3600 s")
    if not (0 <= args.well_behaved <= 500 and 0 <= args.hostile <= 500):
        parser.error("--well-behaved and --hostile: 0..500 each")
    if not 0.1 <= args.header_timeout <= 60:
        parser.error(f"--header-timeout={args.header_timeout}: must be 0.1..60 s")
    out = None if str(args.out) == "-" else args.out
    return Options(args.duration, args.well_behaved, args.hostile, args.header_timeout, args.seed, out)


def main(argv: list[str] | None = None) -> int:
    """Run, print, store; exit 1 when a check fails."""
    options = parse_args(argv)
    return run_guarded(lambda: run_soak(options), prefix="soak: ",
                       interrupted="interrupted; the served side was stopped, nothing stored")  # fmt: skip


def run_soak(options: Options) -> int:
    """Run, print, store (``results/soak/<stamp>-soak/``, the invoking user's); exit 1 when a check fails."""
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in options.__dict__.items()}
    metadata = base_metadata("soak", arguments)
    report, passed = soak(options)
    print_report(report)
    if options.out is not None:
        folder = new_run_dir(options.out, "soak")
        write_json(folder / "soak.json", report)
        write_json(folder / "metadata.json", {**metadata, "passed": passed, "figures": headline(report)})
        print(f"stored in {folder}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
