"""One small byte-stream interface over both transports, so the relay code is shared.

``ByteStream``: ``read`` / ``write`` + ``drain`` (backpressure) / ``write_eof`` (half-close) /
``close`` (orderly, waits) / ``abort`` (RST). ``SocketStream`` wraps asyncio streams over a kernel
socket (TCP or MPTCP). ``UserspaceStream`` wraps one connection of the userspace transport
(``robe.userspace``): a ``UserspaceClient`` or a server-side ``ServerHandle``.

The userspace transport acknowledges data as soon as it is reassembled, so its receive side would
buffer without bound when the application reads slowly. ``BoundedClient`` and ``BoundedServer``
pause reading the connection's subflow sockets once ``RECV_HIGH_WATER`` bytes wait in the inbox
and resume below ``RECV_LOW_WATER``: the kernel's TCP windows then push back on the peer. (The
peer's data-acks for our own direction travel on the same paused subflows, so the two directions
of one connection are coupled while paused.)
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import resource
import socket
import struct
from collections.abc import Callable

from robe.protocol.connection import Endpoint, ServerConnection
from robe.userspace import ServerHandle, UserspaceClient, UserspaceServer

CHUNK = 65_536
READ_LIMIT = 65_536  # asyncio StreamReader: pauses the socket above twice this
RECV_HIGH_WATER = 1 << 20
RECV_LOW_WATER = 256 * 1024
CLOSE_LINGER_S = 5.0  # userspace close: wait this long at most for our data to be acknowledged
LISTEN_BACKLOG = 1024


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Raise this process's open-file limit towards ``wanted`` (within the hard limit); return it.

    A proxied connection holds two to four sockets (more with several subflows), so the common
    default of 1024 would cap a proxy at a few hundred concurrent connections.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def set_nodelay(sock: socket.socket | None) -> None:
    """Turn Nagle's algorithm off. asyncio does it only for sockets whose ``proto`` is IPPROTO_TCP,
    which neither MPTCP sockets (262) nor sockets created with protocol 0 (and accepted from them) are."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_quickack(sock: socket.socket | None) -> None:
    """Send a pending ACK now and leave delayed-ACK (interactive) mode; Linux re-enters it by
    itself, so this is set after every read (``SocketStream(quickack=True)``)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def set_linger_zero(sock: socket.socket | None) -> None:
    """Make the next close send an RST (SO_LINGER 0)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class ByteStream(abc.ABC):
    """A bidirectional byte stream with half-close and backpressure."""

    @abc.abstractmethod
    async def read(self, max_bytes: int = CHUNK) -> bytes:
        """Up to ``max_bytes``; b"" at the end of the peer's stream. Raises OSError on a reset."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue ``data``; call ``drain`` before writing more."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until the queued bytes are down to a bounded amount."""

    @abc.abstractmethod
    def write_eof(self) -> None:
        """End our direction once everything queued is sent; reading goes on."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Orderly close of both directions; returns when the socket(s) are closed."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the connection at once with an RST."""


class SocketStream(ByteStream):
    """asyncio streams over one kernel socket.

    ``quickack``: acknowledge what was read at once (TCP_QUICKACK after every read). A peer that
    writes small pieces with Nagle's algorithm on (wget: a TLS record of 6 bytes, then its
    Finished) holds the next piece until the last one is acknowledged; Linux delays that ACK up to
    40 ms on an interactive connection, which on the client proxy's loopback hop would cost every
    HTTPS connection 40 ms that no network path causes.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, quickack: bool = False) -> None:
        self.reader = reader
        self.writer = writer
        self.quickack = quickack

    @classmethod
    async def wrap(cls, sock: socket.socket, quickack: bool = False) -> SocketStream:
        """Streams over an already connected non-blocking socket."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=READ_LIMIT)
        return cls(reader, writer, quickack)

    @property
    def socket(self) -> socket.socket | None:
        """The underlying socket (for introspection: TCP_INFO, MPTCP subflows)."""
        sock: socket.socket | None = self.writer.get_extra_info("socket")
        return sock

    async def read(self, max_bytes: int = CHUNK) -> bytes:
        data = await self.reader.read(max_bytes)
        if self.quickack and data:
            set_quickack(self.socket)
        return data

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def write_eof(self) -> None:
        if not self.writer.transport.is_closing() and self.writer.can_write_eof():
            with contextlib.suppress(OSError):
                self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    def abort(self) -> None:
        set_linger_zero(self.socket)
        self.writer.transport.abort()


UserspaceDriver = UserspaceClient | ServerHandle


class UserspaceStream(ByteStream):
    """One userspace-transport connection.

    Args:
        driver: the client, or the server's handle of the connection.
        endpoint: the connection's state machine.
        transports: the connection's subflow transports now.
        alive: whether the connection still has (or is opening) a subflow.
        consumed: called after each read, to resume paused subflows.
    """

    def __init__(
        self,
        driver: UserspaceDriver,
        endpoint: Endpoint,
        transports: Callable[[], list[asyncio.Transport]],
        alive: Callable[[], bool],
        consumed: Callable[[], None] = lambda: None,
    ) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self._transports = transports
        self._alive = alive
        self._consumed = consumed
        self._pending = bytearray()
        self._eof_wanted = False
        self._eof_sent = False

    def _dead(self) -> ConnectionResetError:
        return ConnectionResetError("every subflow of the userspace connection closed")

    async def read(self, max_bytes: int = CHUNK) -> bytes:
        driver = self.driver
        while not driver.inbox and not driver.ended:
            if not self._alive():
                raise self._dead()
            driver.data_ready.clear()
            await driver.data_ready.wait()
        chunk = bytes(driver.inbox[:max_bytes])
        del driver.inbox[:max_bytes]
        self._consumed()
        return chunk

    def _push(self) -> None:
        while self._pending:
            taken = self.driver.write(bytes(self._pending[: 4 * CHUNK]))
            if not taken:
                break
            del self._pending[:taken]
        if self._eof_wanted and not self._pending and not self._eof_sent:
            self._eof_sent = True
            self.driver.close()

    def write(self, data: bytes) -> None:
        if self._eof_wanted:
            raise RuntimeError("write after write_eof")
        self._pending += data
        self._push()

    async def drain(self) -> None:
        while self._pending:
            if not self._alive():
                raise self._dead()
            self.driver.progress.clear()
            await self.driver.progress.wait()
            self._push()

    def write_eof(self) -> None:
        self._eof_wanted = True
        self._push()

    def _all_acked(self) -> bool:
        """Every byte we wrote is acknowledged (the protocol does not acknowledge DATA_FIN itself)."""
        send = self.endpoint.send
        return send is None or send.acked_dsn == send.end_dsn

    async def close(self) -> None:
        """Orderly once both streams ended and our data is acknowledged; an RST otherwise.

        Either way the connection is abandoned first: a subflow that is still joining (its
        handshake crossed the close) is reset instead of staying open with nobody to close it.
        """
        if not (self._eof_sent and self.driver.ended):
            self.abort()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_LINGER_S):
                while not self._all_acked() and self._alive():
                    self.driver.progress.clear()
                    await self.driver.progress.wait()
        if not self._all_acked():
            self.abort()
            return
        self.driver.abandon()
        transports = self._transports()
        for transport in transports:
            transport.close()
        await asyncio.sleep(0)  # let connection_lost run

    def abort(self) -> None:
        self.driver.abandon()
        for transport in self._transports():
            set_linger_zero(transport.get_extra_info("socket"))
            transport.abort()


def _pause(transports: list[asyncio.Transport], paused: bool) -> None:
    for transport in transports:
        if transport.is_closing():
            continue
        if paused and transport.is_reading():
            transport.pause_reading()
        elif not paused and not transport.is_reading():
            transport.resume_reading()


class BoundedClient(UserspaceClient):
    """``UserspaceClient`` with a bounded inbox and wake-ups when subflows go away."""

    def connection_transports(self) -> list[asyncio.Transport]:
        """Every subflow transport of this connection."""
        return list(self.transports.values())

    def alive(self) -> bool:
        """A subflow is up or being opened."""
        return bool(self.transports) or bool(self.pending)

    def subflow_data(self, sid: int, data: bytes) -> None:
        super().subflow_data(sid, data)
        if len(self.inbox) > RECV_HIGH_WATER:
            _pause(self.connection_transports(), True)

    def consumed(self) -> None:
        """The application read: resume the subflows below the low-water mark."""
        if len(self.inbox) <= RECV_LOW_WATER:
            _pause(self.connection_transports(), False)

    def subflow_down(self, sid: int) -> None:
        super().subflow_down(sid)
        self.data_ready.set()
        self.progress.set()

    def stream(self) -> UserspaceStream:
        """The byte stream of this connection."""
        return UserspaceStream(self, self.conn, self.connection_transports, self.alive, self.consumed)


class BoundedServer(UserspaceServer):
    """``UserspaceServer`` with a bounded inbox per connection and wake-ups when subflows go away."""

    async def listen(self, host: str, port: int) -> asyncio.AbstractServer:
        """Start accepting on ``host:port`` with a deep accept queue."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(self._new_protocol, host, port, reuse_address=True, backlog=LISTEN_BACKLOG)

    def connection_transports(self, conn: ServerConnection) -> list[asyncio.Transport]:
        """The subflow transports of one connection."""
        return [t for sid in conn.subflows if (t := self.transports.get(sid)) is not None]

    def subflow_data(self, sid: int, data: bytes) -> None:
        super().subflow_data(sid, data)
        conn = self.server.owner.get(sid)
        handle = self.handles.get(conn.key_a) if conn is not None else None
        if conn is not None and handle is not None and len(handle.inbox) > RECV_HIGH_WATER:
            _pause(self.connection_transports(conn), True)

    def subflow_down(self, sid: int) -> None:
        conn = self.server.owner.get(sid)
        handle = self.handles.get(conn.key_a) if conn is not None else None
        super().subflow_down(sid)
        if handle is not None:
            handle.data_ready.set()
            handle.progress.set()

    def stream(self, handle: ServerHandle) -> UserspaceStream:
        """The byte stream of one accepted connection."""
        conn = handle.conn

        def consumed() -> None:
            if len(handle.inbox) <= RECV_LOW_WATER:
                _pause(self.connection_transports(conn), False)

        return UserspaceStream(
            handle, conn, lambda: self.connection_transports(conn), lambda: bool(conn.subflows), consumed
        )
