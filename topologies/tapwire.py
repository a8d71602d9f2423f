"""Userspace link emulator: one process joins two TAP devices (one per namespace) like a shaped wire.

Used where the kernel lacks ``sch_netem``. The process creates TAP device ``--a-name`` inside the
network namespace ``--a-netns`` and ``--b-name`` inside ``--b-netns`` and copies Ethernet frames
between them; each direction passes a ``DirectionShaper`` (loss, drop-tail queue, rate, delay,
jitter). The TAP devices exist only while the process holds them, so when the emulator dies the
link disappears: traffic fails loudly instead of passing unshaped.

Control protocol on stdin/stdout, one JSON document per line:

* first line: the link parameters (``LinkParams.to_dict()``); answer ``READY {json}`` once both
  devices exist;
* later parameter lines: answer ``OK`` (applies to frames arriving from then on);
* ``{"cmd": "stats"}``: answer ``STATS {json}`` with per-direction counters;
* ``{"cmd": "seed", "seed": N}``: restart the loss/jitter generators from N; answer ``OK``;
* a bad line: answer ``ERROR <message>``; end of input (the controller closed the pipe or died):
  the emulator exits and its devices vanish.

Run as ``python -m topologies.tapwire --tag rl-... --a-netns /proc/PID/ns/net --a-name ...``.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import fcntl
import gc
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from robe_lab.cliparse import command_parser
from topologies.linkparams import LinkConfigError, LinkParams
from topologies.shaper import DirectionShaper

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
SIOCSIFMTU = 0x8922
PR_SET_TIMERSLACK = 29
# Frames read per device per wake-up before serving the other device and the clock: bounds the
# time one busy direction can delay due departures of the other.
READ_BATCH = 32
MAX_FRAME = 65_536
# Waking up from select() takes time (about 0.1 ms on a small VM). The loop measures it after each
# timed wake-up and wakes that much earlier, so frames leave on average at their due time instead
# of consistently late. Bounded so a scheduling hiccup cannot make frames leave far too early.
MAX_WAKE_LEAD_S = 0.0003
WAKE_LEAD_GAIN = 0.05

_libc = ctypes.CDLL(None, use_errno=True)


class TapWireError(RuntimeError):
    """Setting up the devices failed; the message says which step and why."""


def set_netns(path: str) -> None:
    """Move this (single-threaded) process into the network namespace at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise TapWireError(f"cannot open network namespace {path}: {err.strerror}") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise TapWireError(f"setns({path}) failed: {os.strerror(code)}")
    finally:
        os.close(fd)


def open_tap(name: str, mtu: int) -> int:
    """Create TAP device ``name`` in the current namespace with ``mtu``; return its non-blocking fd."""
    if not 0 < len(name.encode()) < 16:
        raise TapWireError(f"interface name {name!r}: must be 1..15 bytes")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCSIFMTU, struct.pack("16si", name.encode(), mtu))
    except OSError as err:
        os.close(fd)
        raise TapWireError(f"cannot create TAP device {name}: {err.strerror}") from None
    return fd


@dataclass
class Direction:
    """Frames travelling from one device to the other, with their due times."""

    name: str
    read_fd: int
    write_fd: int
    shaper: DirectionShaper
    pending: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    delivered: int = 0
    write_errors: int = 0
    max_late_us: float = 0.0
    late_over_1ms: int = 0

    def stats(self) -> dict[str, Any]:
        """Counters for the STATS answer."""
        record: dict[str, Any] = self.shaper.stats.to_dict()
        record.update(
            delivered=self.delivered,
            in_flight=len(self.pending),
            write_errors=self.write_errors,
            max_late_us=round(self.max_late_us, 1),
            late_over_1ms=self.late_over_1ms,
        )
        return record

    def receive(self, now: float) -> None:
        """Read up to READ_BATCH frames from the source device and schedule them."""
        for _ in range(READ_BATCH):
            try:
                frame = os.read(self.read_fd, MAX_FRAME)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise
            due = self.shaper.offer(len(frame), now)
            if due is not None:
                self.pending.append((due, frame))

    def send_due(self, now: float, lead: float = 0.0) -> None:
        """Write every frame due by ``now + lead`` to the destination device."""
        pending = self.pending
        while pending and pending[0][0] <= now + lead:
            due, frame = pending.popleft()
            late_us = (now - due) * 1e6
            self.max_late_us = max(self.max_late_us, late_us)
            if late_us > 1000:
                self.late_over_1ms += 1
            try:
                os.write(self.write_fd, frame)
                self.delivered += 1
            except OSError:
                # The receiving stack refused the frame (device down, no buffer): a loss, counted.
                self.write_errors += 1


class Emulator:
    """The two directions plus the control channel; ``run`` is the event loop."""

    def __init__(self, a_fd: int, b_fd: int, params: LinkParams, seed: int) -> None:
        self.a_to_b = Direction("a_to_b", a_fd, b_fd, DirectionShaper(params.a_to_b, random.Random(f"{seed}/a_to_b")))
        self.b_to_a = Direction("b_to_a", b_fd, a_fd, DirectionShaper(params.b_to_a, random.Random(f"{seed}/b_to_a")))
        self.params = params
        self._control = b""
        self.wake_lead_s = 0.0

    def reseed(self, seed: int) -> None:
        """Restart both directions' loss and jitter generators from ``seed`` (reproducible runs)."""
        self.a_to_b.shaper.rng.seed(f"{seed}/a_to_b")
        self.b_to_a.shaper.rng.seed(f"{seed}/b_to_a")

    def stats(self) -> dict[str, Any]:
        """Both directions' counters and the current parameters."""
        return {
            "a_to_b": self.a_to_b.stats(),
            "b_to_a": self.b_to_a.stats(),
            "params": self.params.to_dict(),
            "wake_lead_us": round(self.wake_lead_s * 1e6, 1),
        }

    def handle_control_line(self, line: str) -> str:
        """Answer one control line."""
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise LinkConfigError(f"control message {line!r}: must be a JSON object")
            if message.get("cmd") == "stats":
                return "STATS " + json.dumps(self.stats())
            if message.get("cmd") == "seed":
                seed = message.get("seed")
                if isinstance(seed, bool) or not isinstance(seed, int):
                    raise LinkConfigError(f"seed={seed!r}: must be an integer")
                self.reseed(seed)
                return "OK"
            params = LinkParams.from_dict(message)
        except (ValueError, LinkConfigError) as err:
            return f"ERROR {err}"
        self.params = params
        self.a_to_b.shaper.set_params(params.a_to_b)
        self.b_to_a.shaper.set_params(params.b_to_a)
        return "OK"

    def read_control(self, fd: int) -> bool:
        """Serve complete control lines from ``fd``; False at end of input."""
        chunk = os.read(fd, 65_536)
        if not chunk:
            return False
        self._control += chunk
        while b"\n" in self._control:
            raw, self._control = self._control.split(b"\n", 1)
            if raw.strip():
                answer = self.handle_control_line(raw.decode(errors="replace"))
                os.write(sys.stdout.fileno(), answer.encode() + b"\n")
        return True

    def run(self, control_fd: int) -> None:
        """Move frames until the control channel closes."""
        directions = (self.a_to_b, self.b_to_a)
        readers = [control_fd, self.a_to_b.read_fd, self.b_to_a.read_fd]
        by_fd = {d.read_fd: d for d in directions}
        clock = time.monotonic
        while True:
            now = clock()
            next_due = None
            for direction in directions:
                direction.send_due(now, self.wake_lead_s)
                if direction.pending:
                    head = direction.pending[0][0]
                    next_due = head if next_due is None or head < next_due else next_due
            before = clock()
            timeout = None if next_due is None else max(0.0, next_due - before - self.wake_lead_s)
            readable, _, _ = select.select(readers, [], [], timeout)
            now = clock()
            if not readable and timeout is not None:
                overshoot = now - before - timeout
                lead = self.wake_lead_s + WAKE_LEAD_GAIN * (overshoot - self.wake_lead_s)
                self.wake_lead_s = min(max(lead, 0.0), MAX_WAKE_LEAD_S)
            for fd in readable:
                if fd == control_fd:
                    if not self.read_control(fd):
                        return
                else:
                    by_fd[fd].receive(now)


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the emulator."""
    parser = command_parser("topologies.tapwire", __doc__)
    parser.add_argument("--tag", required=True, help="name prefix that marks this process as ours")
    parser.add_argument("--a-netns", required=True, help="namespace file of end a, e.g. /proc/PID/ns/net")
    parser.add_argument("--a-name", required=True, help="TAP device name at end a")
    parser.add_argument("--b-netns", required=True, help="namespace file of end b")
    parser.add_argument("--b-name", required=True, help="TAP device name at end b")
    parser.add_argument("--mtu", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0, help="seeds the loss and jitter generators")
    return parser.parse_args(argv)


def read_first_params(fd: int) -> LinkParams:
    """Block until the first control line (the link parameters) arrives."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65_536)
        if not chunk:
            raise TapWireError("control channel closed before the link parameters arrived")
        data += chunk
    line, rest = data.split(b"\n", 1)
    if rest.strip():
        raise TapWireError("wait for READY before sending further control lines")
    try:
        return LinkParams.from_dict(json.loads(line))
    except (ValueError, LinkConfigError) as err:
        raise TapWireError(f"bad link parameters: {err}") from None


def main(argv: list[str] | None = None) -> int:
    """Create the devices, answer READY, move frames until stdin closes."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    # Timer slack of 1 us: select() wake-ups otherwise land up to 50 us late.
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    control_fd = sys.stdin.fileno()
    try:
        params = read_first_params(control_fd)
        home = f"/proc/{os.getpid()}/ns/net"
        home_fd = os.open(home, os.O_RDONLY)
        try:
            set_netns(args.a_netns)
            a_fd = open_tap(args.a_name, args.mtu)
            set_netns(args.b_netns)
            b_fd = open_tap(args.b_name, args.mtu)
        finally:
            _libc.setns(home_fd, CLONE_NEWNET)
            os.close(home_fd)
    except TapWireError as err:
        print(f"tapwire {args.tag}: {err}", file=sys.stderr)
        return 2
    emulator = Emulator(a_fd, b_fd, params, args.seed)
    ready = {"pid": os.getpid(), "a": args.a_name, "b": args.b_name, "tag": args.tag}
    os.write(sys.stdout.fileno(), f"READY {json.dumps(ready)}\n".encode())
    # The loop allocates one bytes object per frame; a collector pause would add milliseconds of
    # jitter, and there are no reference cycles to collect.
    gc.disable()
    try:
        emulator.run(control_fd)
    except KeyboardInterrupt:
        return 130
    finally:
        os.close(a_fd)
        os.close(b_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
