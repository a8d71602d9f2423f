"""Thin asyncio adapters for the userspace RobE transport: subflows are ordinary kernel TCP
connections, the protocol is ``robe.protocol.connection``.

``UserspaceClient.connect`` opens one connection and returns once it is established; ``write``,
``read`` and ``close`` move application bytes. ``UserspaceServer`` accepts subflows and hands each
established connection to a callback. Both log every protocol event with ``time.monotonic_ns()``
(the clock the kernel endpoints use), so experiments read both backends alike.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from robe import kernel
from robe.protocol import crypto
from robe.protocol.connection import (
    ClientConnection,
    CloseSubflow,
    ConnectionReleased,
    DataReceived,
    Endpoint,
    Established,
    OpenSubflow,
    Output,
    Server,
    ServerConnection,
    StreamEnded,
    SubflowFailed,
    SubflowReady,
    SubflowState,
    Superseded,
    Transmit,
)
from robe.protocol.frames import ResetReason, Rst
from robe.selection import HistoryFeed

READ_CHUNK = 65_536
#: A subflow whose decoder holds more than this many bytes of frames not handled yet stops being
#: read until they are (the state machines take ``FRAMES_PER_CALL`` frames per call).
INPUT_BACKLOG = 256 * 1024
#: The server driver's own event log keeps the latest this many events (per-connection logs are
#: bounded by their connection's lifetime).
SERVER_EVENT_LOG = 10_000
#: A subflow that has not completed its handshake (CAP, CAP_ATTACH, JOIN + JOIN_FIN) this long
#: after it was accepted is reset (``ResetReason.TIMEOUT``).
HANDSHAKE_TIMEOUT_S = 10.0
#: Open subflows a server accepts at most; further ones are reset at once.
MAX_SUBFLOWS = 8192


def _abort(transport: asyncio.Transport) -> None:
    """Close with a TCP RST (SO_LINGER 0), as the kernel strategies reset losers."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _SubflowProtocol(asyncio.Protocol):
    """One TCP subflow; everything goes to the owner."""

    def __init__(self, owner: _Driver, sid: int, path: int) -> None:
        self.owner, self.sid, self.path = owner, sid, path

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.owner.subflow_up(self.sid, self.path, transport)

    def data_received(self, data: bytes) -> None:
        self.owner.subflow_data(self.sid, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.subflow_down(self.sid)

    def pause_writing(self) -> None:
        self.owner.set_writable(self.sid, False)

    def resume_writing(self) -> None:
        self.owner.set_writable(self.sid, True)


@dataclass
class _Driver:
    """Carries out a state machine's outputs on asyncio transports and logs its events."""

    transports: dict[int, asyncio.Transport] = field(default_factory=dict)
    paths: dict[int, int] = field(default_factory=dict)
    events: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    inbox: bytearray = field(default_factory=bytearray)
    data_ready: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False  # the peer's stream ended (DATA_FIN): reads return b"" once the inbox is empty
    reset: bool = False  # every subflow is gone before the peer's stream ended: reads raise
    draining: set[int] = field(default_factory=set)  # subflows with frames waiting: handled next turn
    input_paused: set[int] = field(default_factory=set)  # subflows not read until their backlog is handled

    def log(self, what: str, **detail: Any) -> None:
        self.events.append({"t_ns": time.monotonic_ns(), "what": what, **detail})

    def machine(self, sid: int) -> Endpoint | None:
        raise NotImplementedError

    def subflow_up(self, sid: int, path: int, transport: asyncio.Transport) -> None:
        raise NotImplementedError

    def subflow_data(self, sid: int, data: bytes) -> None:
        raise NotImplementedError

    def subflow_down(self, sid: int) -> None:
        raise NotImplementedError

    def input_pending(self, sid: int) -> bool:
        """Whether subflow ``sid`` holds frames its state machine has not handled yet."""
        raise NotImplementedError

    def input_buffered(self, sid: int) -> int:
        """Bytes of subflow ``sid`` received and not handled yet."""
        raise NotImplementedError

    def after_input(self, sid: int) -> None:
        """After the state machine took its share of a subflow's input: hand it the rest on the
        next loop turn (other callbacks run in between), and stop reading a subflow whose backlog
        is large until it is handled."""
        transport = self.transports.get(sid)
        if transport is None:
            return
        if self.input_pending(sid) and sid not in self.draining:
            self.draining.add(sid)
            asyncio.get_running_loop().call_soon(self._drain_input, sid)
        backlog = self.input_buffered(sid)
        if backlog > INPUT_BACKLOG and sid not in self.input_paused and not transport.is_closing():
            self.input_paused.add(sid)
            transport.pause_reading()
        elif backlog <= INPUT_BACKLOG // 2 and sid in self.input_paused:
            self.input_paused.discard(sid)
            if not transport.is_closing() and not transport.is_reading():
                transport.resume_reading()

    def _drain_input(self, sid: int) -> None:
        self.draining.discard(sid)
        if sid in self.transports:
            self.subflow_data(sid, b"")

    def set_writable(self, sid: int, writable: bool) -> None:
        machine = self.machine(sid)
        if machine is not None:
            machine.set_path_info(sid, self._srtt_us(sid), writable)
            if writable:
                self.apply(machine.pump())

    def _socket(self, sid: int) -> Any:
        transport = self.transports.get(sid)
        return transport.get_extra_info("socket") if transport else None

    def _srtt_us(self, sid: int) -> int:
        sock = self._socket(sid)
        if sock is None:
            return 1_000_000
        with contextlib.suppress(OSError):
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            return int(struct.unpack_from("I", info, 68)[0])
        return 1_000_000

    def apply(self, outputs: list[Output]) -> None:
        # Anything that happened may have freed send-buffer space (a data-ack): wake writers.
        self.progress.set()
        # Frames for the same subflow go out in one write, so that (with TCP_NODELAY) a CAP and the
        # first data share one segment, as MP_CAPABLE and the request share the kernel's.
        pending: dict[int, bytearray] = {}
        for out in outputs:
            if isinstance(out, Transmit):
                pending.setdefault(out.sid, bytearray()).extend(out.data)
                continue
            if isinstance(out, CloseSubflow):
                self._flush(pending, out.sid)
            self._apply_one(out)
        for sid in list(pending):
            self._flush(pending, sid)

    def _flush(self, pending: dict[int, bytearray], sid: int) -> None:
        data = pending.pop(sid, None)
        if not data:
            return
        transport = self.transports.get(sid)
        if transport is not None:
            if not transport.is_closing():
                transport.write(bytes(data))
        else:
            self.write_raw(sid, bytes(data))

    def write_raw(self, sid: int, data: bytes) -> bool:
        """Write to a subflow that has no transport yet (client side); False if there is none."""
        return False

    def close_raw(self, sid: int) -> bool:
        """Reset a subflow that has no transport yet (client side); False if there is none."""
        return False

    def _apply_one(self, out: Output) -> None:
        if isinstance(out, CloseSubflow):
            transport = self.transports.pop(out.sid, None)
            self.log("subflow_closed", sid=out.sid, reason=out.reason.name if out.reason else None)
            if transport is None:
                self.close_raw(out.sid)
            else:
                _abort(transport) if out.reason is not None else transport.close()
        elif isinstance(out, OpenSubflow):
            self.open_subflow(out.path, out.initial)
        elif isinstance(out, Established):
            self.log("established", sid=out.sid, path=out.path)
        elif isinstance(out, SubflowReady):
            self.log("subflow_ready", sid=out.sid, path=out.path)
            machine = self.machine(out.sid)
            if machine is not None:
                machine.set_path_info(out.sid, self._srtt_us(out.sid), True)
        elif isinstance(out, DataReceived):
            if not self.inbox:
                self.log("data", bytes=len(out.data))
            self.inbox += out.data
            self.data_ready.set()
        elif isinstance(out, StreamEnded):
            self.ended = True
            self.data_ready.set()
        elif isinstance(out, SubflowFailed):
            self.log("subflow_failed", sid=out.sid, reason=out.reason.name, detail=out.detail)

    def open_subflow(self, path: int, initial: bool = False) -> None:
        raise NotImplementedError

    def endpoint(self) -> Endpoint:
        """The one connection this driver reads and writes (client, or one server connection)."""
        raise NotImplementedError

    def write(self, data: bytes) -> int:
        """Queue bytes and send what the scheduler allows; returns how many were taken."""
        endpoint = self.endpoint()
        # The scheduler's RTTs, fresh: a subflow that became ready before its asyncio transport
        # existed (the client's first subflow) would otherwise keep the 1 s placeholder.
        for sid, flow in endpoint.subflows.items():
            endpoint.set_path_info(sid, self._srtt_us(sid), flow.writable)
        taken = endpoint.write(data)
        self.apply(endpoint.pump())
        return taken

    def close(self) -> None:
        """End our stream: DATA_FIN once everything written is sent."""
        endpoint = self.endpoint()
        endpoint.close()
        self.apply(endpoint.pump())

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``, waiting for acknowledgements whenever the send buffer is full."""
        view = memoryview(data)
        while view:
            taken = self.write(bytes(view[: READ_CHUNK * 4]))
            view = view[taken:]
            if view and not taken:
                # Full: wait for the next thing the network tells us (a data-ack frees space).
                self.progress.clear()
                await self.progress.wait()

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        """Up to ``max_bytes`` in-order bytes; b"" once the peer's stream ended.

        Raises ConnectionResetError when the connection lost every subflow before its end.
        """
        while not self.inbox and not self.ended:
            if self.reset:
                raise ConnectionResetError("every subflow of the userspace connection closed before its end")
            self.data_ready.clear()
            await self.data_ready.wait()
        chunk = bytes(self.inbox[:max_bytes])
        del self.inbox[:max_bytes]
        return chunk


@dataclass
class UserspaceClient(_Driver):
    """A client connection over one TCP subflow per path (``sources``: one address per path)."""

    strategy: str = "mptcp-user"
    server: tuple[str, int] = ("127.0.0.1", 0)
    sources: list[str] = field(default_factory=list)
    scheduler: str = "lowest-rtt"  # robe.protocol.sending.SCHEDULERS
    conn: ClientConnection = field(init=False)
    established: asyncio.Future[int] | None = None
    next_sid: int = 0
    pending: set[int] = field(default_factory=set)  # attempts without a transport yet
    failures: list[str] = field(default_factory=list)
    prepared: dict[int, socket.socket] = field(default_factory=dict)  # path -> socket for connect()
    raw: dict[int, socket.socket] = field(default_factory=dict)  # sid -> socket before its transport
    backlog: dict[int, bytearray] = field(default_factory=dict)  # sid -> bytes the raw socket did not take
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    wrapping: set[int] = field(default_factory=set)  # connected sockets being handed to asyncio
    doomed: set[int] = field(default_factory=set)  # of those, closed meanwhile: abort once wrapped
    order: list[int] | None = None  # the path order (RobE_IPS: robe.selection.plan); default 0, 1, ...
    feed: HistoryFeed | None = None  # what RobE_IPS's path history is told (attempts, joins)
    # The cost of robustness: potentially initial attempts (sid -> path), and which of them the
    # connection kept (the winner; downgrade's attached and eSIM's recycled ones), failed, or reset.
    initial_sids: dict[int, int] = field(default_factory=dict)
    winner_sid: int | None = None
    ready_sids: set[int] = field(default_factory=set)
    failed_sids: set[int] = field(default_factory=set)
    reset_losers: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        order = tuple(self.order) if self.order is not None else None
        self.conn = ClientConnection(strategy=self.strategy, paths=len(self.sources), scheduler=self.scheduler,
                                     order=order)  # fmt: skip

    def machine(self, sid: int) -> Endpoint | None:
        return self.conn

    async def connect(self, first_data: bytes = b"") -> int:
        """Open the connection (``first_data`` rides with the CAP); return the initial path."""
        self.established = asyncio.get_running_loop().create_future()
        if first_data:
            self.conn.write(first_data)
        first = self.conn.start()
        # The first attempts' sockets exist before connect() is called, as the kernel strategies'
        # (robe.client prepares them too): creating and binding them is not set-up time.
        for out in first:
            if isinstance(out, OpenSubflow):
                self.prepared[out.path] = self._new_socket(out.path)
        self.log("connect_called")
        self.apply(first)
        return await self.established

    def apply(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Established):
                self.winner_sid = out.sid
            elif isinstance(out, SubflowReady):
                self.ready_sids.add(out.sid)
                if out.sid not in self.initial_sids:
                    self._report_join(out.sid)
            elif isinstance(out, CloseSubflow):
                self._loser_gone(out.sid)
        super().apply(outputs)
        for out in outputs:
            if isinstance(out, Established) and self.established and not self.established.done():
                self.established.set_result(out.path)

    def _loser_gone(self, sid: int) -> None:
        """A potentially initial attempt other than the winner, neither kept nor failed, is reset or
        abandoned now (once a winner exists: a connection that never started has no losers)."""
        path = self.initial_sids.get(sid)
        if (path is None or self.winner_sid is None or sid == self.winner_sid or sid in self.ready_sids
                or sid in self.failed_sids or sid in self.reset_losers):  # fmt: skip
            return
        self.reset_losers.add(sid)
        self.log("reset", sid=sid, path=path)
        if self.feed is not None:
            self.feed.dropped(path, time.monotonic_ns())

    def _report_join(self, sid: int) -> None:
        """A join is ready: its path's RTT and its set-up outcome (retransmissions) to the history."""
        sock = self._socket(sid)
        if self.feed is None or sock is None:
            return
        info = kernel.tcp_info(sock)
        with contextlib.suppress(OSError):
            local = "{}:{}".format(*sock.getsockname()[:2])
            if info is not None:
                self.feed.subflow(local, info.min_rtt_us or info.rtt_us, time.monotonic_ns(), info.total_retrans)

    @property
    def losers_reset(self) -> int:
        """Potentially initial attempts the client reset or abandoned (SIM's and bbm's losers, eSIM's
        not recycled in time, downgrade's not attached in time)."""
        return len(self.reset_losers)

    def _new_socket(self, path: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.sources[path], 0))
        return sock

    def open_subflow(self, path: int, initial: bool = False) -> None:
        # connect() right here, and the first frames straight onto the socket once it is connected
        # (see _connected): asyncio's create_connection would add several loop turns to each.
        self.next_sid += 1
        sid = self.next_sid
        self.paths[sid] = path
        # "attempt" as in the kernel race's log: a potentially initial subflow; joins apart.
        self.log("attempt" if initial else "join_attempt", sid=sid, path=path)
        if initial:
            self.initial_sids[sid] = path
            if self.feed is not None:
                self.feed.started(path, time.monotonic_ns())
        self.pending.add(sid)
        loop = asyncio.get_running_loop()
        try:
            sock = self.prepared.pop(path, None) or self._new_socket(path)
        except OSError as err:
            loop.call_soon(self._attempt_failed, sid, path, None, err.errno or 0)
            return
        code = sock.connect_ex(self.server)
        if code not in (0, errno.EINPROGRESS):
            # Refused at once (no route, address gone): reported from the loop, not re-entrantly.
            loop.call_soon(self._attempt_failed, sid, path, sock, code)
            return
        self.raw[sid] = sock
        loop.add_writer(sock.fileno(), self._connected, sid, path, sock)

    def _attempt_failed(self, sid: int, path: int, sock: socket.socket | None, code: int) -> None:
        if sock is not None:
            sock.close()
        self.raw.pop(sid, None)
        self.pending.discard(sid)
        reason = os.strerror(code) if code else "connect failed"
        self.log("attempt_failed", sid=sid, path=path, error=reason)
        self.failed_sids.add(sid)
        if sid in self.initial_sids and self.feed is not None:
            self.feed.failed(path, time.monotonic_ns())
        self.failures.append(f"path {path}: {reason}")
        self.apply(self.conn.subflow_closed(sid))
        if self.established and not self.established.done() and not self.pending and not self.transports:
            # Every attempt failed before one was established: the kernel gave up on each.
            self.established.set_exception(ConnectionError("; ".join(self.failures) or "no attempt connected"))

    def _connected(self, sid: int, path: int, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_writer(sock.fileno())
        if self.raw.get(sid) is not sock:
            return  # aborted meanwhile
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._attempt_failed(sid, path, sock, code)
            return
        self.log("tcp_connected", sid=sid, path=path, local="{}:{}".format(*sock.getsockname()[:2]))
        if sid in self.initial_sids and self.feed is not None:
            info = kernel.tcp_info(sock)
            retransmitted = 1 if info is None else max(info.total_retrans, info.retransmits)
            self.feed.established(path, time.monotonic_ns(), retransmitted)
        self.apply(self.conn.subflow_connected(sid, path))  # its frames go out on the raw socket now
        if self.raw.get(sid) is sock:  # not closed by the state machine (a break-before-make loser)
            self.wrapping.add(sid)
            task = loop.create_task(self._wrap(sid, path, sock))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _wrap(self, sid: int, path: int, sock: socket.socket) -> None:
        """Hand the connected socket to an asyncio transport (reads, buffered writes, close)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _SubflowProtocol(self, sid, path), sock=sock)
        except OSError as err:
            self.wrapping.discard(sid)
            self.doomed.discard(sid)
            if self.raw.pop(sid, None) is sock:
                self._attempt_failed(sid, path, sock, err.errno or 0)
            else:
                sock.close()

    def subflow_up(self, sid: int, path: int, transport: asyncio.Transport) -> None:
        self.wrapping.discard(sid)
        if sid in self.doomed:  # closed while asyncio took the socket over: reset it now
            self.doomed.discard(sid)
            _abort(transport)
            return
        self.raw.pop(sid, None)
        self.pending.discard(sid)
        self.transports[sid] = transport
        backlog = self.backlog.pop(sid, None)
        if backlog:
            transport.write(bytes(backlog))

    def _socket(self, sid: int) -> Any:
        return super()._socket(sid) or self.raw.get(sid)

    def write_raw(self, sid: int, data: bytes) -> bool:
        """Frames for a subflow whose transport does not exist yet: onto its socket, in order."""
        sock = self.raw.get(sid)
        if sock is None:
            return False
        backlog = self.backlog.setdefault(sid, bytearray())
        if not backlog:
            try:
                data = data[sock.send(data) :]
            except BlockingIOError:
                pass
            except OSError:
                return True  # the socket died: connection_lost/subflow_closed follow
        backlog.extend(data)
        return True

    def close_raw(self, sid: int) -> bool:
        """Reset a subflow that has no transport yet (a loser); True if it was one."""
        sock = self.raw.pop(sid, None)
        if sock is None:
            return False
        self._loser_gone(sid)
        self.backlog.pop(sid, None)
        self.pending.discard(sid)
        if sid in self.wrapping:
            # asyncio may own the socket already (its transport exists before connection_made):
            # closing it under the transport could close a reused descriptor. Abort the transport.
            self.doomed.add(sid)
            return True
        with contextlib.suppress(OSError):
            asyncio.get_running_loop().remove_writer(sock.fileno())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self.backlog.pop(sid, None)
        self.pending.discard(sid)
        return True

    def subflow_data(self, sid: int, data: bytes) -> None:
        self.apply(self.conn.receive(sid, data))
        self.after_input(sid)

    def input_pending(self, sid: int) -> bool:
        return self.conn.input_pending(sid)

    def input_buffered(self, sid: int) -> int:
        flow = self.conn.subflows.get(sid)
        return flow.decoder.buffered if flow is not None else 0

    def subflow_down(self, sid: int) -> None:
        self.draining.discard(sid)
        self.input_paused.discard(sid)
        if self.transports.pop(sid, None) is not None:
            self.log("subflow_down", sid=sid)
        self.apply(self.conn.subflow_closed(sid))

    def endpoint(self) -> Endpoint:
        return self.conn

    def abandon(self) -> None:
        """The application closed or aborted the connection: no subflow joins it any more.

        Attempts still connecting are reset, subflows still in their handshake too (the state
        machine resets any that completes one later), unused prepared sockets are closed.
        """
        conn = self.conn
        outputs = conn.abandon()
        for sock in self.prepared.values():
            sock.close()
        self.prepared.clear()
        for sid in [s for s in self.pending if s not in conn.subflows]:  # connecting: unknown to the machine
            self.close_raw(sid)
            outputs += conn.subflow_closed(sid)
        self.apply(outputs)

    def abort(self) -> None:
        """Drop every subflow at once."""
        self.conn.abandoned = True
        for sid, transport in list(self.transports.items()):
            self._loser_gone(sid)
            _abort(transport)
        self.transports.clear()
        for sid in list(self.raw):
            self.close_raw(sid)
        for sock in self.prepared.values():
            sock.close()
        self.prepared.clear()


@dataclass
class UserspaceServer(_Driver):
    """Accepts subflows; calls ``on_connection(server_connection_handle)`` for each new connection.

    Attributes:
        handshake_timeout_s: a subflow not ready for data (CAP, CAP_ATTACH, or JOIN and JOIN_FIN
            done) this long after it was accepted is reset with ``ResetReason.TIMEOUT``.
        max_subflows: open subflows at most; further ones are reset as soon as they are accepted.
    """

    on_connection: Callable[[ServerHandle], Coroutine[Any, Any, None]] | None = None
    robe: bool = True
    scheduler: str = "lowest-rtt"  # of every connection (robe.protocol.sending.SCHEDULERS)
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    max_subflows: int = MAX_SUBFLOWS
    server: Server = field(init=False)
    next_sid: int = 0
    handles: dict[int, ServerHandle] = field(default_factory=dict)  # by Key-A
    deadlines: dict[int, asyncio.TimerHandle] = field(default_factory=dict)  # sid -> handshake deadline
    handler_tasks: set[asyncio.Task[None]] = field(default_factory=set)  # on_connection(...) running
    refused: int = 0  # subflows reset at once because ``max_subflows`` were open
    timed_out: int = 0  # subflows reset by the handshake deadline
    #: Called with the peer ``ADDR:PORT`` and the accept time of each *loser*: a subflow the server
    #: accepted that went away without its connection ever receiving data (bbm's reset loser, an eSIM
    #: attempt reset before it was recycled), as ``robe serve`` logs kernel losers.
    on_loser: Callable[[str, int], None] | None = None
    peers: dict[int, tuple[str, int]] = field(default_factory=dict)  # sid -> (peer, accept_ns)

    def __post_init__(self) -> None:
        if not self.handshake_timeout_s > 0:
            raise ValueError(f"handshake_timeout_s={self.handshake_timeout_s!r}: must be > 0")
        if self.max_subflows < 1:
            raise ValueError(f"max_subflows={self.max_subflows}: must be >= 1")
        self.server = Server(robe=self.robe, scheduler=self.scheduler)
        self.events = collections.deque(maxlen=SERVER_EVENT_LOG)

    def machine(self, sid: int) -> Endpoint | None:
        return self.server.owner.get(sid)

    async def listen(self, host: str, port: int) -> asyncio.AbstractServer:
        """Start accepting on ``host:port``."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(self._new_protocol, host, port, reuse_address=True)

    def _new_protocol(self) -> _SubflowProtocol:
        self.next_sid += 1
        return _SubflowProtocol(self, self.next_sid, -1)

    def open_subflow(self, path: int, initial: bool = False) -> None:
        raise RuntimeError("the server never opens subflows")

    def subflow_up(self, sid: int, path: int, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        if len(self.transports) >= self.max_subflows:
            self.refused += 1
            self.log("refused", sid=sid, peer=f"{peer[0]}:{peer[1]}", reason=f"{self.max_subflows} subflows open")
            _abort(transport)
            return
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transports[sid] = transport
        self.peers[sid] = (f"{peer[0]}:{peer[1]}", time.monotonic_ns())
        self.log("accepted", sid=sid, peer=f"{peer[0]}:{peer[1]}")
        self.server.subflow_accepted(sid)
        loop = asyncio.get_running_loop()
        self.deadlines[sid] = loop.call_later(self.handshake_timeout_s, self._handshake_deadline, sid)

    def abandon(self, handle: ServerHandle) -> None:
        """``handle``'s application closed or aborted it (``ServerHandle.abandon``)."""
        outputs = self.server.abandon(handle.conn)
        handle.apply(outputs)
        self._released(outputs)

    def _handshake_deadline(self, sid: int) -> None:
        """Reset the subflow unless its handshake is done (silent, dripping or stuck half-way)."""
        self.deadlines.pop(sid, None)
        transport = self.transports.get(sid)
        if transport is None:
            return
        conn = self.server.owner.get(sid)
        flow = conn.subflows.get(sid) if conn is not None else None
        if flow is not None and flow.state is SubflowState.READY:
            return
        self.timed_out += 1
        self.log("subflow_failed", sid=sid, reason=ResetReason.TIMEOUT.name,
                 detail=f"handshake not complete within {self.handshake_timeout_s:g} s")  # fmt: skip
        if not transport.is_closing():
            transport.write(Rst(ResetReason.TIMEOUT).encode())
        _abort(transport)  # connection_lost -> subflow_down releases what the subflow held

    def _released(self, outputs: list[Output]) -> None:
        """Handles of connections that ended or lost their last subflow: forget them, wake readers."""
        for out in outputs:
            if isinstance(out, Superseded):  # an eSIM loser merged into another connection: it ends
                loser = self.handles.pop(out.key_a, None)
                if loser is not None:
                    loser.ended = True
                    loser.data_ready.set()
                    loser.progress.set()
            elif isinstance(out, ConnectionReleased):
                gone = self.handles.pop(out.key_a, None)
                if gone is not None:
                    if out.ended:
                        gone.ended = True
                    else:
                        gone.reset = True
                    gone.data_ready.set()
                    gone.progress.set()

    def subflow_data(self, sid: int, data: bytes) -> None:
        conn, outputs = self.server.receive(sid, data)
        handle = None
        if conn is not None:
            handle = self.handles.get(conn.key_a)
            if handle is None and conn.subflows:  # not for a connection reset as soon as it came
                handle = ServerHandle(self, conn)
                self.handles[conn.key_a] = handle
                if self.on_connection is not None:
                    task = asyncio.get_running_loop().create_task(self.on_connection(handle))
                    self.handler_tasks.add(task)
                    task.add_done_callback(self.handler_tasks.discard)
        (handle or self).apply(outputs)
        self._released(outputs)
        self.after_input(sid)

    def input_pending(self, sid: int) -> bool:
        return self.server.input_pending(sid)

    def input_buffered(self, sid: int) -> int:
        conn = self.server.owner.get(sid)
        flow = conn.subflows.get(sid) if conn is not None else self.server.unclassified.get(sid)
        return flow.decoder.buffered if flow is not None else 0

    def _apply_one(self, out: Output) -> None:
        if isinstance(out, DataReceived | StreamEnded):
            return  # of a connection without a handle (reset at once): nobody reads it
        super()._apply_one(out)

    def subflow_down(self, sid: int) -> None:
        self.draining.discard(sid)
        self.input_paused.discard(sid)
        deadline = self.deadlines.pop(sid, None)
        if deadline is not None:
            deadline.cancel()
        conn = self.server.owner.get(sid)
        self.transports.pop(sid, None)
        accepted = self.peers.pop(sid, None)
        carried = conn is not None and conn.recv is not None and conn.recv.next_dsn != crypto.idsn(conn.key_a)
        if accepted is not None and not carried and self.on_loser is not None:
            self.on_loser(*accepted)
        outputs = self.server.subflow_closed(sid)
        handle = self.handles.get(conn.key_a) if conn is not None else None
        (handle or self).apply(outputs)
        self._released(outputs)


class ServerHandle(_Driver):
    """One server-side connection: read and write application bytes, see its event log."""

    def __init__(self, owner: UserspaceServer, conn: ServerConnection) -> None:
        super().__init__(transports=owner.transports)
        self.owner: UserspaceServer = owner
        self.conn: ServerConnection = conn

    def machine(self, sid: int) -> Endpoint | None:
        return self.conn

    def open_subflow(self, path: int, initial: bool = False) -> None:
        raise RuntimeError("the server never opens subflows")

    def endpoint(self) -> Endpoint:
        return self.conn

    def abandon(self) -> None:
        """The application closed or aborted the connection: no subflow joins it any more, and a
        join still in its handshake is reset."""
        self.owner.abandon(self)
