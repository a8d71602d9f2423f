"""Timing canary: is the host keeping time while a worker measures?

Every worker of a sweep has a probe process in its client namespace and a reflector (``udpprobe
reflect``) on its server. Right before and right after each attempt the worker sends a short burst
of UDP probes (``PROBES`` probes, ``SPACING_MS`` apart) over a path that carries no loss, and takes
the median round trip minus the path's configured RTT: the canary error. A busy host shows up
there first: the link emulators and the endpoints are userspace processes, and a late wake-up
delays the probes as it delays the attempt's packets. The row gets the worse of the two errors
(``canary_ms``); ``canary_flagged`` marks rows whose error exceeds ``TOLERANCE_MS`` (1 ms, the
tolerance of the 0 % loss acceptance check). The probes leave before the attempt reseeds its loss
generators and after it ended, so they never share a link with the attempt's packets.

``python -m experiments.canary probe --src A --dst B --port P`` is the probe process: for every
line ``N`` on stdin it sends N probes and prints one JSON line ``{"rtt_ms": [...], "sent": N}``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from experiments.metadata import PROJECT_ROOT
from experiments.udpprobe import (
    KIND_PROBE,
    KIND_REPLY,
    MalformedProbeError,
    Probe,
    _enable_kernel_timestamps,
    _kernel_rx_monotonic_ns,
    decode_probe,
    encode_probe,
)
from robe_lab.records import Record, RecordKinds
from topologies.startup import wait_ready

if TYPE_CHECKING:  # the probe process starts in every network: no pandas import there
    import pandas as pd

#: Probes per burst, their spacing, and how long a burst waits for the last reply beyond one RTT.
PROBES = 5
SPACING_MS = 2.0
REPLY_WAIT_MS = 200.0
#: A row whose canary error exceeds this was measured while the host was too busy.
TOLERANCE_MS = 1.0
CANARY_PORT = 5009
CANARY_STREAM = 9


def canary_error_ms(rtt_ms: Iterable[float], configured_rtt_ms: float) -> float | None:
    """Median probe RTT minus the configured RTT (None when no probe came back)."""
    rtts = list(rtt_ms)
    return statistics.median(rtts) - configured_rtt_ms if rtts else None


def worst(*errors: float | None) -> float | None:
    """The error furthest from zero (a missing burst counts as infinitely late)."""
    if any(error is None for error in errors):
        return math.inf
    present = [error for error in errors if error is not None]
    return max(present, key=abs) if present else None


def flagged(error_ms: float | None, tolerance_ms: float = TOLERANCE_MS) -> bool:
    """Whether a canary error marks the row as measured on a busy host."""
    return error_ms is None or not math.isfinite(error_ms) or abs(error_ms) > tolerance_ms


def row_fields(error_ms: float | None) -> dict[str, Any]:
    """The runs.csv columns of a canary error (a lost burst: no number, flagged)."""
    if error_ms is None:
        return {"canary_ms": "", "canary_flagged": ""}
    shown = "" if not math.isfinite(error_ms) else f"{error_ms:.3f}"
    return {"canary_ms": shown, "canary_flagged": int(flagged(error_ms))}


def count_flagged(flags: pd.Series[Any]) -> tuple[int, int]:
    """(rows flagged, rows with a canary) of a typed ``canary_flagged`` column (``analysis.schema``)."""
    measured = flags.dropna().astype(bool)
    return int(measured.sum()), len(measured)


# ---------------------------------------------------------------------------------------------
# The probe process (runs inside the client namespace).


def burst(sock: socket.socket, count: int, seq0: int, wait_s: float) -> list[float]:
    """Send ``count`` probes SPACING_MS apart and collect their RTTs (ms) for up to ``wait_s`` after."""
    rtts: dict[int, float] = {}
    start = time.monotonic_ns()
    sent = 0
    deadline: float | None = None
    while True:
        now = time.monotonic_ns()
        if sent < count and now >= start + int(sent * SPACING_MS * 1e6):
            sock.send(encode_probe(Probe(stream=CANARY_STREAM, seq=seq0 + sent, send_ns=time.monotonic_ns(),
                                         kind=KIND_PROBE)))  # fmt: skip
            sent += 1
            if sent == count:
                deadline = time.monotonic() + wait_s
            continue
        if deadline is not None and (len(rtts) == count or time.monotonic() >= deadline):
            return [rtts[k] for k in sorted(rtts)]
        next_send = (start + int(sent * SPACING_MS * 1e6) - now) / 1e9 if sent < count else None
        left = (deadline - time.monotonic()) if deadline is not None else None
        timeout = min(t for t in (next_send, left) if t is not None)
        readable, _, _ = select.select([sock], [], [], max(timeout, 0.0))
        if not readable:
            continue
        data, ancdata, _flags, _addr = sock.recvmsg(2048, 256)
        arrived = _kernel_rx_monotonic_ns(ancdata) or time.monotonic_ns()
        try:
            reply = decode_probe(data)
        except MalformedProbeError:
            continue
        if reply.kind == KIND_REPLY and reply.stream == CANARY_STREAM and seq0 <= reply.seq < seq0 + count:
            rtts[reply.seq] = (arrived - reply.send_ns) / 1e6


def probe_loop(src: str, dst: str, port: int) -> int:
    """Answer each stdin line N with one burst of N probes (JSON line); exit at end of input."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    sock.connect((dst, port))
    _enable_kernel_timestamps(sock)
    print("READY", flush=True)
    seq = 0
    for line in sys.stdin:
        count = max(1, min(int(line.strip() or PROBES), 100))
        # Replies of an earlier burst that came back late are skipped by their sequence numbers.
        rtts = burst(sock, count, seq, REPLY_WAIT_MS / 1000)
        seq += count
        print(Burst([round(r, 4) for r in rtts], count).to_line(), flush=True)
    return 0


@dataclass(frozen=True)
class Burst(Record):
    """The prober's answer to one request: the RTTs of the replies (ms) and how many probes left."""

    EVENT = "burst"
    rtt_ms: list[float]
    sent: int


BURSTS: RecordKinds[Burst] = RecordKinds("canary prober", [Burst])


# ---------------------------------------------------------------------------------------------
# The worker's side.


class Canary:
    """A worker's probe process and reflector; ``measure()`` gives one canary error (ms)."""

    def __init__(self, net: Any, src: str, dst: str, configured_rtt_ms: float, label: str) -> None:
        self.configured_rtt_ms = configured_rtt_ms
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        python = sys.executable
        self.reflector = net.popen(net.server, [python, "-m", "experiments.udpprobe", "reflect", "--bind", dst,
                                                "--port", str(CANARY_PORT)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env, cwd=PROJECT_ROOT)  # fmt: skip
        wait_ready(self.reflector, f"{label}: canary reflector", "READY")
        self.prober = net.popen(net.client, [python, "-m", "experiments.canary", "probe", "--src", src, "--dst", dst,
                                             "--port", str(CANARY_PORT)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=PROJECT_ROOT)  # fmt: skip
        wait_ready(self.prober, f"{label}: canary prober", "READY")

    def measure(self, probes: int = PROBES) -> float | None:
        """One burst; the median RTT error, or None if the prober is gone or no probe came back."""
        assert self.prober.stdin is not None and self.prober.stdout is not None
        try:
            self.prober.stdin.write(f"{probes}\n")
            self.prober.stdin.flush()
            burst = BURSTS.read_line(self.prober.stdout.readline(), "canary prober")
        except (OSError, ValueError):  # a dead prober, or a line that is not a burst (RecordError)
            return None
        return canary_error_ms(burst.rtt_ms, self.configured_rtt_ms)

    def close(self) -> None:
        """Stop both processes (the network's teardown would, too)."""
        for proc in (self.prober, self.reflector):
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the probe process."""
    parser = argparse.ArgumentParser(prog="python -m experiments.canary", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    probe = sub.add_parser("probe", help="answer each stdin line N with a burst of N probes")
    probe.add_argument("--src", required=True)
    probe.add_argument("--dst", required=True)
    probe.add_argument("--port", type=int, default=CANARY_PORT)
    args = parser.parse_args(argv)
    return probe_loop(args.src, args.dst, args.port)


if __name__ == "__main__":
    sys.exit(main())
