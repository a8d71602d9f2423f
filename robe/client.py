"""Client endpoint: carries out a ``Race`` on real kernel sockets and logs the connection's timing.

``connect()`` opens one connection to ``server`` with a strategy over the given source addresses
(one per path, path 0 the default), sends a one-line request right after establishment (as a
browser would; the kernel adds subflows only once data is acknowledged), waits for the server's
reply, then watches the MPTCP subflows for ``hold_s`` and closes. Every timestamp is
``time.monotonic_ns()``, one clock for all network namespaces of the machine, so client and server
logs can be subtracted.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from robe import kernel
from robe.ips import PathHistory
from robe.race import Action, Race, Step
from robe.selection import HistoryFeed, plan, shared_history
from robe.strategies import Kind, Protocol, Strategy
from robe_lab.records import RecordError, build

POLL_INTERVAL_S = 0.001
MAX_WAIT_SLICE_S = 0.05
MAX_REPLY = 4096


class ConnectError(ValueError):
    """Bad arguments to connect(); raised before any socket is opened."""


@dataclass(frozen=True)
class ConnectionEvent:
    """One step of the connection's race (``robe.race``: ``attempt``, ``winner``, ``reset``, ``timer``,
    ``failed``, ...; the userspace transport's own steps likewise), ``path`` 0-based."""

    t_ns: int
    event: str
    path: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class SubflowSeen:
    """A subflow first seen established (``local``/``remote``: address:port)."""

    t_ns: int
    local: str
    remote: str
    total_retrans: int | None = None


@dataclass(frozen=True)
class ConnectRequest:
    """One connection to open: what ``robe agent`` reads per line (``from_json``) and an experiment
    writes (``to_json``); the keyword arguments of ``connect`` plus ``history_scope`` (RobE_IPS: the
    path history this connection learns from and feeds; None: the process's shared one)."""

    conn_id: str
    strategy: str
    server: str
    sources: list[str]
    timer_s: float = 1.0
    hold_s: float = 0.3
    timeout_s: float | None = None
    history_scope: str | None = None

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str | bytes, where: str = "robe agent request") -> ConnectRequest:
        """The request of one line (``RecordError`` naming the field otherwise)."""
        return build(cls, _json_object(line, where), where)


def _json_object(line: str | bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError as err:
        raise RecordError(f"{where}: not JSON ({err}): {str(line)[:120]!r}") from None
    if not isinstance(data, dict):
        raise RecordError(f"{where}: {data!r} is not a JSON object")
    return data


@dataclass
class ConnectionRecord:
    """What happened to one connection, with times in ns on the shared monotonic clock: the answer
    ``robe connect`` prints and ``robe agent`` writes per request (``to_json``), read back by
    ``from_json``."""

    conn_id: str
    strategy: str
    server: str
    sources: list[str]
    status: str = "pending"  # ok | failed | censored | error
    error: str = ""
    connect_ns: int = 0
    winner: int | None = None
    established_ns: int | None = None
    request_sent_ns: int | None = None
    reply_ns: int | None = None
    fallback_tcp: bool | None = None
    local_ports: dict[int, int] = field(default_factory=dict)
    syn_retransmits: dict[int, int] = field(default_factory=dict)
    events: list[ConnectionEvent] = field(default_factory=list)
    subflows: list[SubflowSeen] = field(default_factory=list)
    path_order: list[int] = field(default_factory=list)  # the order the paths were tried in (RobE_IPS)
    ips_mode: str = "default"  # default (no IPS), ips, or sim (RobE_IPS+SIM without history)
    ips_history: dict[str, Any] = field(default_factory=dict)  # the history the plan was made from

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str | bytes, where: str = "robe agent answer") -> ConnectionRecord:
        """The record of one line written by ``to_json`` (``robe_lab.records.RecordError`` naming the
        field otherwise)."""
        return build(cls, _json_object(line, where), where)

    @classmethod
    def failure(cls, conn_id: str, error: str, strategy: str = "") -> ConnectionRecord:
        """The record of a connection that could not be tried (bad request, dead agent): status ``error``."""
        return cls(conn_id, strategy, "", [], status="error", error=error)

    def count(self, event: str) -> int:
        """How many of the race's steps were ``event``."""
        return sum(1 for e in self.events if e.event == event)


def check_endpoints(server: str, sources: list[str]) -> tuple[str, int]:
    """Validate ``ADDRESS:PORT`` and the per-path source addresses; return the server address."""
    address = parse_server(server)
    if not sources:
        raise ConnectError("sources=[]: give at least one source address (the default path first)")
    for source in sources:
        try:
            socket.inet_aton(source)
        except OSError:
            raise ConnectError(f"sources: {source!r} is not an IPv4 address") from None
    return address


def parse_server(server: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (IPv4) -> (address, port), or ConnectError naming the bad value."""
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConnectError(f"server={server!r}: expected ADDRESS:PORT")
    try:
        socket.inet_aton(host)
    except OSError:
        raise ConnectError(f"server={server!r}: {host!r} is not an IPv4 address") from None
    return host, int(port)


@dataclass
class _Attempt:
    path: int
    sock: socket.socket


class _Driver:
    """Executes a race's steps with a selector."""

    def __init__(
        self,
        race: Race,
        record: ConnectionRecord,
        server: tuple[str, int],
        protocol: Protocol,
        request: bytes,
        feed: HistoryFeed | None = None,
    ) -> None:
        self.race = race
        self.feed = feed or HistoryFeed(None, "", record.sources)
        self.request = request
        self.prepared: dict[int, socket.socket] = {}
        self.record = record
        self.server = server
        self.protocol = protocol
        # select(2) takes its timeout in microseconds; epoll's and poll's milliseconds would make
        # RobE_TIMER fire up to 1 ms late.
        self.selector = selectors.SelectSelector()
        self.attempts: dict[int, _Attempt] = {}
        self.won: _Attempt | None = None
        self.gave_up = False
        self.immediate_failures: list[tuple[_Attempt, int]] = []

    def note_retransmits(self, attempt: _Attempt) -> None:
        """Record the attempt's SYN retransmissions (TCP_INFO) before its socket goes away."""
        info = kernel.tcp_info(attempt.sock)
        if info is not None:
            self.record.syn_retransmits[attempt.path] = max(info.total_retrans, info.retransmits)

    def prepare(self, paths: list[int]) -> None:
        """Create and bind the sockets of the first attempts, so connect() is the next system call."""
        for path in paths:
            self.prepared[path] = self._socket(path)

    def _socket(self, path: int) -> socket.socket:
        sock = kernel.open_socket(self.protocol)
        sock.bind((self.record.sources[path], 0))
        self.record.local_ports[path] = sock.getsockname()[1]
        return sock

    def apply(self, steps: list[Step]) -> None:
        for step in steps:
            if step.action is Action.GIVE_UP:
                self.gave_up = True
                continue
            assert step.path is not None
            if step.action is Action.CONNECT:
                self._start(step.path)
                continue
            attempt = self.attempts.pop(step.path)
            self.selector.unregister(attempt.sock)
            if step.action is Action.RESET:
                self.note_retransmits(attempt)
                self.feed.dropped(attempt.path, time.monotonic_ns())
                kernel.abort(attempt.sock)
            else:
                # The request goes out before anything else (resetting the losers included): a
                # browser writes its request as soon as connect() returns.
                self.record.request_sent_ns = time.monotonic_ns()
                sent = attempt.sock.send(self.request)
                if sent != len(self.request):
                    raise ConnectionError(f"request only partly sent ({sent}/{len(self.request)} bytes)")
                self.won = attempt

    def _start(self, path: int) -> None:
        sock = self.prepared.pop(path, None) or self._socket(path)
        self.feed.started(path, time.monotonic_ns())
        code = sock.connect_ex(self.server)
        attempt = _Attempt(path, sock)
        self.attempts[path] = attempt
        self.selector.register(sock, selectors.EVENT_WRITE, attempt)
        if code not in (0, errno.EINPROGRESS):
            # Refused at once (no route, address not assigned); reported from the loop, since the
            # race may not be re-entered from inside one of its own steps.
            self.immediate_failures.append((attempt, code))

    def _fail(self, attempt: _Attempt, code: int, now: int) -> None:
        self.note_retransmits(attempt)
        self.selector.unregister(attempt.sock)
        del self.attempts[attempt.path]
        attempt.sock.close()
        self.feed.failed(attempt.path, now)
        self.apply(self.race.on_failed(attempt.path, now, os.strerror(code)))

    def run(self, deadline_ns: int | None) -> None:
        """Until a winner, a give-up, or the deadline."""
        while self.won is None and not self.gave_up:
            now = time.monotonic_ns()
            waits = [t for t in (self.race.timer_due_ns, deadline_ns) if t is not None]
            # Linux lets a select() wake up late by 0.1 % of its timeout (1 ms for RobE_TIMER's 1 s):
            # short slices keep the timer within ~0.1 ms.
            timeout = min(max(0.0, (min(waits) - now) / 1e9), MAX_WAIT_SLICE_S) if waits else MAX_WAIT_SLICE_S
            if deadline_ns is not None and now >= deadline_ns:
                return
            if self.immediate_failures:
                refused, code = self.immediate_failures.pop(0)
                self._fail(refused, code, now)
                continue
            for key, _ in self.selector.select(timeout):
                attempt: _Attempt = key.data
                if attempt.path not in self.attempts:
                    continue  # reset by an earlier event of this batch
                now = time.monotonic_ns()
                code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    info = kernel.tcp_info(attempt.sock)
                    # No TCP_INFO: counted as one retransmission (no RTT sample, a partial failure).
                    retransmitted = 1 if info is None else max(info.total_retrans, info.retransmits)
                    self.feed.established(attempt.path, now, retransmitted)
                    self.apply(self.race.on_established(attempt.path, now))
                else:
                    self._fail(attempt, code, now)
            if self.race.timer_due_ns is not None and time.monotonic_ns() >= self.race.timer_due_ns:
                self.apply(self.race.on_timer(time.monotonic_ns()))

    def close_all(self) -> None:
        for attempt in list(self.attempts.values()):
            self.note_retransmits(attempt)
            self.feed.dropped(attempt.path, time.monotonic_ns())
            kernel.abort(attempt.sock)
        self.attempts.clear()
        for sock in self.prepared.values():
            sock.close()
        self.prepared.clear()
        self.selector.close()


def _read_reply(sock: socket.socket, record: ConnectionRecord, deadline_ns: int | None) -> None:
    """Read the server's reply line to the request the driver sent."""
    sock.setblocking(True)
    reply = b""
    while b"\n" not in reply:
        if deadline_ns is not None:
            left = (deadline_ns - time.monotonic_ns()) / 1e9
            if left <= 0:
                raise TimeoutError("no reply before the deadline")
            sock.settimeout(left)
        chunk = sock.recv(MAX_REPLY)
        if not chunk:
            raise ConnectionError("server closed before replying")
        reply += chunk
        if len(reply) > MAX_REPLY:
            raise ConnectionError("reply too long")
    record.reply_ns = time.monotonic_ns()


def _watch_subflows(sock: socket.socket, record: ConnectionRecord, hold_s: float, feed: HistoryFeed) -> None:
    """Poll the subflows every millisecond for ``hold_s``; log each one when first seen established;
    report every established subflow's path RTT (its minimum RTT) at the end to the path history."""
    seen: set[tuple[str, str]] = set()
    end = time.monotonic() + hold_s
    while True:
        for flow in kernel.subflows(sock):
            key = (flow.local, flow.remote)
            if flow.established and key not in seen:
                seen.add(key)
                record.subflows.append(SubflowSeen(time.monotonic_ns(), flow.local, flow.remote, flow.total_retrans))
        if time.monotonic() >= end:
            now = time.monotonic_ns()
            for flow in kernel.subflows(sock):
                if flow.established:
                    feed.subflow(flow.local, flow.path_rtt_us, now, flow.total_retrans)
            return
        time.sleep(POLL_INTERVAL_S)


def connect(
    *,
    conn_id: str,
    strategy: Strategy,
    server: str,
    sources: list[str],
    timer_s: float = 1.0,
    hold_s: float = 0.3,
    timeout_s: float | None = None,
    history: PathHistory | None = None,
) -> ConnectionRecord:
    """Open one connection with ``strategy``; never raises for network outcomes (see ``status``).

    RobE_IPS strategies order the paths with ``history`` (default: the process's shared history)
    and report what they saw to it.
    """
    address = check_endpoints(server, sources)
    if strategy.kind is not Kind.KERNEL:
        raise ConnectError(f"strategy={strategy.name!r}: a userspace strategy (robe.userspace_endpoints)")
    multipath = strategy.start_all_at_once or strategy.staggered or strategy.initial_path_selection
    if strategy.protocol is Protocol.TCP or not multipath:
        sources = sources[:1]  # single-path strategies use the default path only
    if strategy.initial_path_selection and history is None:
        history = shared_history()
    if timeout_s is not None and timeout_s <= 0:
        raise ConnectError(f"timeout_s={timeout_s!r}: must be positive")
    record = ConnectionRecord(conn_id, strategy.name, server, list(sources))
    paths = plan(strategy, history, address[0], list(sources), time.monotonic_ns())
    record.path_order, record.ips_mode, record.ips_history = paths.order, paths.mode, paths.history
    race = Race(paths.strategy, len(sources), int(timer_s * 1e9), order=paths.order)
    request = json.dumps({"conn": conn_id}).encode() + b"\n"
    feed = HistoryFeed(history, paths.key, list(sources))
    driver = _Driver(race, record, address, strategy.protocol, request, feed)
    try:
        # RobE_TIMER's later paths are prepared too: opening a socket when the timer fires would
        # delay that attempt by the socket set-up.
        driver.prepare(list(range(len(sources))) if paths.strategy.staggered else race.initial_paths())
        record.connect_ns = time.monotonic_ns()
        deadline = None if timeout_s is None else record.connect_ns + int(timeout_s * 1e9)
        try:
            driver.apply(race.start(record.connect_ns))
            driver.run(deadline)
        except OSError as err:  # the request could not be written on the winner
            record.status, record.error = "failed", f"sending the request: {err}"
            return record
        if driver.won is None:
            record.status = "failed" if driver.gave_up else "censored"
            record.error = "; ".join(f"path {e.path}: {e.detail}" for e in race.events if e.what == "failed")
            if not driver.gave_up:
                record.error = f"no connection within --timeout {timeout_s} s"
            return record
        sock = driver.won.sock
        record.winner = race.winner
        record.established_ns = next(e.t_ns for e in race.events if e.what == "winner")
        try:
            _read_reply(sock, record, deadline)
            driver.note_retransmits(driver.won)
            if strategy.protocol is Protocol.MPTCP:
                record.fallback_tcp = kernel.is_mptcp(sock) is False
                _watch_subflows(sock, record, hold_s, feed)
            else:
                time.sleep(hold_s)
            record.status = "ok"
        except TimeoutError as err:
            # Python maps the kernel's ETIMEDOUT (it gave up retransmitting the request) to
            # TimeoutError too: that is a failure, only our own deadline censors.
            reached_deadline = deadline is not None and time.monotonic_ns() >= deadline
            record.status = "censored" if reached_deadline else "failed"
            record.error = str(err) if reached_deadline else f"after establishment: {err}"
        except OSError as err:
            record.status, record.error = "failed", f"after establishment: {err}"
        finally:
            # A reset, not a FIN: nothing of this connection (a FIN retransmitted under loss) may
            # cross the links once the next attempt has reseeded their loss generators.
            kernel.abort(sock)
        return record
    finally:
        driver.close_all()
        record.events = [ConnectionEvent(e.t_ns, e.what, e.path, e.detail) for e in race.events]
