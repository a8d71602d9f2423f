"""UDP probe tool: paced probes and a reflector, for RTT and one-way loss per direction.

Run as ``python -m experiments.udpprobe``, usually inside a network namespace. Two commands:

``reflect --bind ADDR --port P [--no-stdin-watch]``
    Prints ``READY`` once bound, then echoes every well-formed probe to its sender with the
    reflector's count of distinct probes received so far in that stream stamped into the reply.
    On SIGTERM, SIGINT or end of file on stdin (when stdin is a pipe, socket or terminal) it
    prints one JSON line and exits 0::

        {"received": {"<stream>": distinct probes, ...}, "duplicates": n, "malformed": n,
         "foreign": n, "echoed": n, "echo_errors": n, "port": P}

``send --src ADDR --dst ADDR --port P --count N --interval-ms X [--stream ID] [--wait-ms W] [--size B]``
    Binds to ``--src`` (so policy routing picks the path), sends N probes on an absolute schedule
    (probe i is due at start + i * X ms, so pacing does not drift), collects replies while sending
    and for up to W ms (default 2000) after the last send, and prints one JSON line::

        {"stream": ID, "sent": n, "replies": k, "rtt_ms": [...], "reply_seqs": [...],
         "reflector_max_count": c, "duplicates": n, "malformed": n, "foreign": n,
         "send_errors": {"ENOBUFS": n, ...}, "max_late_ms": x, "timestamps": {"kernel": a, "user": b},
         "count": N, "interval_ms": X, "size": B, "wait_ms": W}

    ``rtt_ms[i]`` belongs to ``reply_seqs[i]`` (arrival order). Forward loss is
    ``sent - received[stream]`` of the reflector; reverse loss is ``received[stream] - replies``.
    The wait stops early once every sent probe has its reply. RTT is the arrival time minus the
    send time carried in the packet, both CLOCK_MONOTONIC; the arrival time is the kernel's
    receive stamp (SO_TIMESTAMPNS) when available, else the time recvmsg returned (see
    ``timestamps``). ``sent`` counts probes handed to the kernel, plus those refused with EPERM
    (an OUTPUT firewall rule dropping them is loss on the path); other send errors are not sent.

Probe datagram: a 28-byte header in network byte order (magic ``RLPB``, version, kind, reserved,
stream u32, seq u32, send time u64 ns, reflector count u32), then zeros up to ``--size`` bytes.

The probe format and the per-packet bookkeeping are pure functions and small classes
(:func:`encode_probe`, :func:`decode_probe`, :class:`ReflectorState`, :class:`ReplyCollector`),
separate from the socket loops so they can be tested without a network.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import platform
import select
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Final

from robe_lab.records import Record, RecordError, RecordKinds

MAGIC: Final = b"RLPB"
VERSION: Final = 1
KIND_PROBE: Final = 0
KIND_REPLY: Final = 1

# Network byte order, no alignment: magic, version, kind, reserved, stream, seq, send time (ns,
# sender's CLOCK_MONOTONIC), reflector's distinct-receive count for the stream (0 in probes).
HEADER: Final = struct.Struct("!4sBBHIIQI")
HEADER_SIZE: Final = HEADER.size
MAX_SIZE: Final = 65_507  # largest UDP payload over IPv4
DEFAULT_SIZE: Final = 64
DEFAULT_WAIT_MS: Final = 2000.0
U32_MAX: Final = 2**32 - 1
U64_MAX: Final = 2**64 - 1

# Big buffers so a burst of probes or replies is not dropped by our own socket, which would be
# indistinguishable from link loss.
SOCKET_BUFFER_BYTES: Final = 8 * 2**20

# SO_TIMESTAMPNS (the "_OLD" variant whose payload is a native struct timespec) is not exported by
# Python's socket module; 35 is its value on the architectures using asm-generic/socket.h.
_SO_TIMESTAMPNS: Final = 35
_GENERIC_SOCKET_ABI: Final = ("x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "riscv64")
_TIMESPEC: Final = struct.Struct("@ll")
# Clock reads around recvmsg are a few microseconds apart; allow that much before distrusting the
# kernel timestamp relative to the userspace one.
_CLOCK_SLACK_NS: Final = 200_000
# A reply never waits this long in our socket; an older kernel stamp means it was misread.
_MAX_QUEUED_NS: Final = 10_000_000_000


class MalformedProbeError(ValueError):
    """A datagram that is not a probe of this tool's format and version."""


@dataclass(frozen=True)
class Probe:
    """Header fields of one probe or reply.

    Attributes:
        stream: stream id chosen by the sender (u32); the reflector counts per stream.
        seq: sequence number within the stream, 0-based (u32).
        send_ns: sender's ``time.monotonic_ns()`` just before sending (u64); echoed unchanged.
        kind: :data:`KIND_PROBE` from the sender, :data:`KIND_REPLY` from the reflector.
        reflector_count: in replies, distinct probes of the stream the reflector had received,
            this one included; 0 in probes.
    """

    stream: int
    seq: int
    send_ns: int
    kind: int = KIND_PROBE
    reflector_count: int = 0


def encode_probe(probe: Probe, size: int = DEFAULT_SIZE) -> bytes:
    """The datagram for ``probe``: header then zero padding up to ``size`` bytes.

    Raises ValueError if a field is out of range or ``size`` is below the header size or above
    the largest UDP payload.
    """
    if not HEADER_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size={size}: must be {HEADER_SIZE}..{MAX_SIZE} bytes")
    if probe.kind not in (KIND_PROBE, KIND_REPLY):
        raise ValueError(f"kind={probe.kind}: must be {KIND_PROBE} or {KIND_REPLY}")
    for name, value, top in (
        ("stream", probe.stream, U32_MAX),
        ("seq", probe.seq, U32_MAX),
        ("send_ns", probe.send_ns, U64_MAX),
        ("reflector_count", probe.reflector_count, U32_MAX),
    ):
        if not 0 <= value <= top:
            raise ValueError(f"{name}={value}: must be 0..{top}")
    fields = (probe.kind, 0, probe.stream, probe.seq, probe.send_ns, probe.reflector_count)
    header = HEADER.pack(MAGIC, VERSION, *fields)
    return header + bytes(size - HEADER_SIZE)


def decode_probe(data: bytes) -> Probe:
    """Parse a datagram made by :func:`encode_probe`; padding after the header is ignored.

    Raises MalformedProbeError for anything else (short, wrong magic, version or kind), so callers
    can count and skip such datagrams.
    """
    if len(data) < HEADER_SIZE:
        raise MalformedProbeError(f"{len(data)} bytes: shorter than the {HEADER_SIZE}-byte header")
    magic, version, kind, _reserved, stream, seq, send_ns, count = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MalformedProbeError(f"magic {magic!r}: expected {MAGIC!r}")
    if version != VERSION:
        raise MalformedProbeError(f"version {version}: expected {VERSION}")
    if kind not in (KIND_PROBE, KIND_REPLY):
        raise MalformedProbeError(f"kind {kind}: unknown")
    return Probe(stream=stream, seq=seq, send_ns=send_ns, kind=kind, reflector_count=count)


@dataclass
class ReflectorState:
    """What the reflector has seen: distinct (stream, seq) per stream and datagrams it skipped."""

    seen: dict[int, set[int]] = field(default_factory=dict)
    duplicates: int = 0
    malformed: int = 0
    foreign: int = 0

    def handle(self, data: bytes) -> bytes | None:
        """Record one received datagram; return the reply to send back, or None to ignore it.

        Duplicated probes are echoed too (the sender discards them) but counted once, so the
        per-stream count is the number of distinct probes that crossed the forward path.
        Replies are never echoed, which rules out two reflectors ping-ponging forever.
        """
        try:
            probe = decode_probe(data)
        except MalformedProbeError:
            self.malformed += 1
            return None
        if probe.kind != KIND_PROBE:
            self.foreign += 1
            return None
        seqs = self.seen.setdefault(probe.stream, set())
        if probe.seq in seqs:
            self.duplicates += 1
        else:
            seqs.add(probe.seq)
        reply = replace(probe, kind=KIND_REPLY, reflector_count=min(len(seqs), U32_MAX))
        # Same size as the probe, so both directions carry the same bytes per packet.
        return encode_probe(reply, size=len(data))

    def received(self) -> dict[str, int]:
        """Distinct probes received per stream, keyed by the stream id as a string (JSON keys)."""
        return {str(stream): len(seqs) for stream, seqs in sorted(self.seen.items())}


@dataclass
class ReplyCollector:
    """The sender's bookkeeping of replies to one stream.

    Attributes:
        stream: the stream id probes were sent with.
        count: probes scheduled; replies with ``seq >= count`` are foreign.
        peer: (address, port) of the reflector; datagrams from elsewhere are foreign.
    """

    stream: int
    count: int
    peer: tuple[str, int]
    rtt_ms: list[float] = field(default_factory=list)
    reply_seqs: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    malformed: int = 0
    foreign: int = 0
    reflector_max_count: int = 0

    def accept(self, data: bytes, source: tuple[Any, ...], rx_ns: int) -> str:
        """Account one received datagram that arrived at monotonic time ``rx_ns``.

        Returns what it was: ``"reply"`` (RTT recorded as ``rx_ns`` minus the send time carried
        in the packet), ``"duplicate"``, ``"malformed"`` or ``"foreign"`` (wrong source, stream,
        kind or sequence range, or a send time in the future).
        """
        if (source[0], source[1]) != self.peer:
            self.foreign += 1
            return "foreign"
        try:
            probe = decode_probe(data)
        except MalformedProbeError:
            self.malformed += 1
            return "malformed"
        if probe.kind != KIND_REPLY or probe.stream != self.stream or probe.seq >= self.count:
            self.foreign += 1
            return "foreign"
        if probe.seq in self.seen:
            self.duplicates += 1
            return "duplicate"
        rtt_ns = rx_ns - probe.send_ns
        if rtt_ns < 0:
            # Cannot come from this process's clock: a stale or forged packet.
            self.foreign += 1
            return "foreign"
        self.seen.add(probe.seq)
        self.reply_seqs.append(probe.seq)
        self.rtt_ms.append(round(rtt_ns / 1e6, 6))
        self.reflector_max_count = max(self.reflector_max_count, probe.reflector_count)
        return "reply"

    @property
    def replies(self) -> int:
        """Distinct replies received."""
        return len(self.seen)


class _StopSignalError(Exception):
    """Raised from the signal handler so a blocking select/recv is interrupted (PEP 475 would
    otherwise retry it)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopSignalError(signal.Signals(signum).name)


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _enlarge_buffers(sock: socket.socket) -> None:
    """Best effort: the FORCE variants pass rmem_max/wmem_max when root; else the capped ones."""
    for force, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
    ):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)


def _enable_kernel_timestamps(sock: socket.socket) -> bool:
    if sys.platform != "linux" or platform.machine().lower() not in _GENERIC_SOCKET_ABI:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _kernel_rx_monotonic_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive time (CLOCK_REALTIME) translated to CLOCK_MONOTONIC, if present."""
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) == _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack(payload)
            # Offset sampled now: both clocks advance together over the microseconds since arrival.
            offset = time.time_ns() - time.monotonic_ns()
            return int(sec * 1_000_000_000 + nsec - offset)
    return None


def _stdin_is_watchable() -> bool:
    """Watch stdin only for a pipe, socket or terminal: /dev/null or a file would be at EOF at
    once and stop the reflector before any probe arrived."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(sys.stdin.fileno())


@dataclass(frozen=True)
class ReflectorSummary(Record):
    """What the reflector prints when it stops: distinct probes received per stream (stream id as a
    string: JSON keys), and its counters."""

    EVENT = "reflector_summary"
    received: dict[str, int]
    duplicates: int
    malformed: int
    foreign: int
    echoed: int
    echo_errors: int
    port: int


@dataclass(frozen=True)
class SendResult(Record):
    """What the sender prints: its plan and what came back (see the module docstring)."""

    EVENT = "send_result"
    stream: int
    sent: int
    replies: int
    rtt_ms: list[float]
    reply_seqs: list[int]
    reflector_max_count: int
    duplicates: int
    malformed: int
    foreign: int
    send_errors: dict[str, int]
    max_late_ms: float
    timestamps: dict[str, int]
    count: int
    interval_ms: float
    size: int
    wait_ms: float


OUTPUT: RecordKinds[ReflectorSummary | SendResult] = RecordKinds("udpprobe output", [ReflectorSummary, SendResult])


def read_reflector_summary(text: str) -> ReflectorSummary:
    """The reflector's summary: the last JSON line of its output (``RecordError`` when there is none
    or it is not one)."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RecordError("udpprobe reflect: no summary line in its output")
    summary = OUTPUT.read_line(lines[-1], "udpprobe reflect")
    if not isinstance(summary, ReflectorSummary):
        raise RecordError(f"udpprobe reflect: printed a {summary.EVENT}, not its summary")
    return summary


def read_send_result(text: str) -> SendResult:
    """The sender's result (its one JSON line)."""
    result = OUTPUT.read_line(text.strip(), "udpprobe send")
    if not isinstance(result, SendResult):
        raise RecordError(f"udpprobe send: printed a {result.EVENT}, not its result")
    return result


def reflect(bind: str, port: int, watch_stdin: bool = True) -> int:
    """Run the reflector until SIGTERM/SIGINT or stdin EOF; print READY, then the JSON summary."""
    state = ReflectorState()
    echoed = echo_errors = 0
    bound_port = port
    stdin_fd = sys.stdin.fileno() if watch_stdin and _stdin_is_watchable() else None
    sock = socket.socket(_family(bind), socket.SOCK_DGRAM)
    try:
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        _enlarge_buffers(sock)
        sock.bind((bind, port))
        sock.setblocking(False)
        bound_port = sock.getsockname()[1]
        print("READY", flush=True)
        watched = [sock.fileno()] if stdin_fd is None else [sock.fileno(), stdin_fd]
        while True:
            readable, _, _ = select.select(watched, [], [])
            if stdin_fd is not None and stdin_fd in readable and not os.read(stdin_fd, 4096):
                break
            # Drain everything queued: one select per datagram would cap the rate we can reflect.
            while True:
                try:
                    data, source = sock.recvfrom(MAX_SIZE + 1)
                except BlockingIOError:
                    break
                reply = state.handle(data)
                if reply is None:
                    continue
                try:
                    sock.sendto(reply, source)
                    echoed += 1
                except OSError:
                    echo_errors += 1
    except (_StopSignalError, KeyboardInterrupt):
        pass
    finally:
        # A second signal while printing the summary must not lose it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sock.close()
    summary = ReflectorSummary(
        received=state.received(),
        duplicates=state.duplicates,
        malformed=state.malformed,
        foreign=state.foreign,
        echoed=echoed,
        echo_errors=echo_errors,
        port=bound_port,
    )
    print(summary.to_line(), flush=True)
    return 0


@dataclass(frozen=True)
class SendPlan:
    """Parameters of one sender run (see the module docstring for their meaning)."""

    dst: str
    port: int
    count: int
    interval_ms: float
    src: str | None = None
    stream: int = 1
    wait_ms: float = DEFAULT_WAIT_MS
    size: int = DEFAULT_SIZE

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count={self.count}: must be >= 0")
        if self.count > U32_MAX + 1:
            raise ValueError(f"count={self.count}: sequence numbers are 32-bit")
        if self.interval_ms < 0 or self.wait_ms < 0:
            raise ValueError(f"interval_ms={self.interval_ms}, wait_ms={self.wait_ms}: must be >= 0")
        if not 0 <= self.stream <= U32_MAX:
            raise ValueError(f"stream={self.stream}: must be 0..{U32_MAX}")
        if not HEADER_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size={self.size}: must be {HEADER_SIZE}..{MAX_SIZE}")
        if not 1 <= self.port <= 65_535:
            raise ValueError(f"port={self.port}: must be 1..65535")


def send(plan: SendPlan) -> SendResult:
    """Send the probes of ``plan`` and collect replies; return the result as a JSON-ready dict."""
    family = _family(plan.dst)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        _enlarge_buffers(sock)
        sock.bind((plan.src or ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
        kernel_ts = _enable_kernel_timestamps(sock)
        peer = socket.getaddrinfo(plan.dst, plan.port, family, socket.SOCK_DGRAM)[0][4]
        collector = ReplyCollector(stream=plan.stream, count=plan.count, peer=(str(peer[0]), int(peer[1])))
        ancbuf = socket.CMSG_SPACE(_TIMESPEC.size) if kernel_ts else 0
        stamps = {"kernel": 0, "user": 0}

        def drain() -> None:
            while True:
                try:
                    data, ancdata, _flags, source = sock.recvmsg(MAX_SIZE + 1, ancbuf, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return
                user_ns = time.monotonic_ns()
                rx_ns = user_ns
                kernel_ns = _kernel_rx_monotonic_ns(ancdata) if kernel_ts else None
                # The kernel stamp excludes our scheduling delay, but is only trusted when it is
                # consistent with the userspace clock read right after it.
                use_kernel = False
                if kernel_ns is not None and -_MAX_QUEUED_NS <= kernel_ns - user_ns <= _CLOCK_SLACK_NS:
                    use_kernel = True
                    rx_ns = min(kernel_ns, user_ns)
                if collector.accept(data, source, rx_ns) == "reply":
                    stamps["kernel" if use_kernel else "user"] += 1

        interval_ns = round(plan.interval_ms * 1e6)
        buffer = bytearray(encode_probe(Probe(plan.stream, 0, 0), plan.size))
        sent = 0
        send_errors: dict[str, int] = {}
        max_late_ns = 0
        start_ns = time.monotonic_ns()
        last_send_ns = start_ns
        for seq in range(plan.count):
            due_ns = start_ns + seq * interval_ns
            while (now := time.monotonic_ns()) < due_ns:
                # Replies are read while we wait, so their user timestamps stay close to arrival.
                readable, _, _ = select.select([sock], [], [], (due_ns - now) / 1e9)
                if readable:
                    drain()
            max_late_ns = max(max_late_ns, now - due_ns)
            send_ns = time.monotonic_ns()
            HEADER.pack_into(buffer, 0, MAGIC, VERSION, KIND_PROBE, 0, plan.stream, seq, send_ns, 0)
            try:
                sock.sendto(buffer, peer)
                sent += 1
            except OSError as err:
                name = errno.errorcode.get(err.errno or 0, str(err.errno))
                send_errors[name] = send_errors.get(name, 0) + 1
                # EPERM is a local firewall rule dropping the probe: that is loss on the path under
                # test, so the probe counts as sent (and lost).
                if err.errno == errno.EPERM:
                    sent += 1
            last_send_ns = send_ns
            drain()
        deadline_ns = last_send_ns + round(plan.wait_ms * 1e6)
        # Stop early once every probe that left has been answered: nothing more can arrive.
        while collector.replies < sent and (now := time.monotonic_ns()) < deadline_ns:
            readable, _, _ = select.select([sock], [], [], (deadline_ns - now) / 1e9)
            if readable:
                drain()
    finally:
        sock.close()
    return SendResult(
        stream=plan.stream,
        sent=sent,
        replies=collector.replies,
        rtt_ms=collector.rtt_ms,
        reply_seqs=collector.reply_seqs,
        reflector_max_count=collector.reflector_max_count,
        duplicates=collector.duplicates,
        malformed=collector.malformed,
        foreign=collector.foreign,
        send_errors=send_errors,
        max_late_ms=round(max_late_ns / 1e6, 6),
        timestamps=stamps,
        count=plan.count,
        interval_ms=plan.interval_ms,
        size=plan.size,
        wait_ms=plan.wait_ms,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.udpprobe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ref = commands.add_parser("reflect", help="echo probes back, count them per stream")
    ref.add_argument("--bind", required=True, help="address to listen on")
    ref.add_argument("--port", type=int, required=True, help="UDP port (0: any free port)")
    ref.add_argument("--no-stdin-watch", action="store_true", help="do not stop on end of file on stdin")
    snd = commands.add_parser("send", help="send paced probes, report RTTs and replies")
    snd.add_argument("--src", default=None, help="source address to bind (selects the path)")
    snd.add_argument("--dst", required=True, help="reflector address")
    snd.add_argument("--port", type=int, required=True, help="reflector UDP port")
    snd.add_argument("--count", type=int, required=True, help="probes to send")
    snd.add_argument("--interval-ms", type=float, required=True, help="time between probe sends")
    snd.add_argument("--stream", type=int, default=1, help="stream id (default 1)")
    snd.add_argument("--wait-ms", type=float, default=DEFAULT_WAIT_MS, help="wait after the last send")
    snd.add_argument("--size", type=int, default=DEFAULT_SIZE, help="UDP payload bytes")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "reflect":
        if not 0 <= args.port <= 65_535:
            parser.error(f"--port {args.port}: must be 0..65535")
        return reflect(args.bind, args.port, watch_stdin=not args.no_stdin_watch)
    try:
        plan = SendPlan(
            dst=args.dst,
            port=args.port,
            count=args.count,
            interval_ms=args.interval_ms,
            src=args.src,
            stream=args.stream,
            wait_ms=args.wait_ms,
            size=args.size,
        )
    except ValueError as err:
        parser.error(str(err))
    print(send(plan).to_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
