"""Server endpoint: accepts MPTCP (and plain TCP) connections and logs, per accepted socket, when it
was accepted and when the client's first request bytes arrived.

Each accepted socket is logged as JSON lines on the log stream (``robe.serverlog``: the records
and their reader):

* ``{"event": "request", "conn": ID, "accept_ns", "first_bytes_ns", "peer", "mptcp", ...}`` when a
  complete request line arrived (the server answers ``OK``), and ``{"event": "closed", ...}`` with
  the same fields plus ``closed_ns`` when the client closes it;
* ``{"event": "loser", "peer", "accept_ns", "closed_ns", "reason"}`` when the socket closed or was
  reset before any request byte: a RobE attempt the client reset after another path won. It is
  counted, never mistaken for the connection.
* ``{"event": "rejected", ..., "reason"}`` for a malformed or oversized request line, and for a
  connection idle longer than ``idle_timeout_s`` (no complete request since it was accepted, or no
  close since the reply); it is then closed;
* ``{"event": "accept_failed", "reason", "accept_ns"}`` when accept() fails for want of resources
  (out of file descriptors: EMFILE, ENFILE, ENOBUFS, ENOMEM): the server stops accepting for
  ``ACCEPT_BACKOFF_S`` and goes on; the waiting connection stays in the kernel's queue.

Times are ``time.monotonic_ns()``, the clock the client logs with.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from robe import kernel
from robe.serverlog import AcceptFailed, Closed, Loser, Rejected, Request, ServerRecord
from robe.strategies import Protocol

MAX_REQUEST = 4096
REPLY = b"OK\n"
#: Longer than a client may legitimately stay silent: a request lost under heavy loss is resent by
#: the kernel for about 925 s (tcp_retries2) after up to 127 s of SYN retries.
IDLE_TIMEOUT_S = 1800.0
#: After accept() fails for want of resources, stop accepting this long (the queue keeps them).
ACCEPT_BACKOFF_S = 0.1
#: Errors of accept() that mean "no resources now", not "this server is broken".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass
class _Peer:
    sock: socket.socket
    peer: str
    accept_ns: int
    mptcp: bool | None
    first_bytes_ns: int | None = None
    buffer: bytes = b""
    answered: bool = False
    request: Request | None = None
    deadline_ns: int = 0  # idle until then: closed (before a request: since accepted; after: since answered)


def parse_request(line: bytes) -> str:
    """The connection id of a request line, or ValueError saying what is wrong with it."""
    try:
        message = json.loads(line)
    except ValueError:
        raise ValueError("request is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("conn"), str) or not message["conn"]:
        raise ValueError("request lacks a string 'conn'")
    conn: str = message["conn"]
    if len(conn) > 200:
        raise ValueError("conn id longer than 200 characters")
    return conn


class Server:
    """A listening socket and its accepted connections, served by one selector loop.

    ``idle_timeout_s``: a connection without a complete request that long after it was accepted,
    or not closed by the client that long after the reply, is closed (logged ``rejected``).
    """

    def __init__(
        self,
        bind: str,
        port: int,
        emit: Callable[[ServerRecord], None],
        backlog: int = 512,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        if not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s={idle_timeout_s!r}: must be > 0")
        self.emit = emit
        self.idle_timeout_ns = int(idle_timeout_s * 1e9)
        self.listener = kernel.open_socket(Protocol.MPTCP)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((bind, port))
        self.listener.listen(backlog)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.peers: dict[int, _Peer] = {}  # by file descriptor
        self.accept_paused_until_ns: int | None = None

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as err:
                if err.errno not in RESOURCE_ERRNOS:
                    raise
                # Out of descriptors: keep serving the open connections, retry accepting shortly.
                now = time.monotonic_ns()
                self.emit(AcceptFailed(reason=os.strerror(err.errno), accept_ns=now))
                self.selector.unregister(self.listener)
                self.accept_paused_until_ns = now + int(ACCEPT_BACKOFF_S * 1e9)
                return
            now = time.monotonic_ns()
            sock.setblocking(False)
            state = _Peer(sock, f"{peer[0]}:{peer[1]}", now, kernel.is_mptcp(sock))
            state.deadline_ns = now + self.idle_timeout_ns
            self.selector.register(sock, selectors.EVENT_READ, state)
            self.peers[sock.fileno()] = state

    def _finish(self, state: _Peer, record: ServerRecord) -> None:
        self.peers.pop(state.sock.fileno(), None)
        self.selector.unregister(state.sock)
        state.sock.close()
        self.emit(record)

    def _expire(self, now: int) -> None:
        """Close idle connections; resume accepting after a back-off."""
        for state in [p for p in self.peers.values() if p.deadline_ns <= now]:
            waited = (now - (state.first_bytes_ns or state.accept_ns)) / 1e9
            what = "no close after the reply" if state.answered else "no complete request"
            self._finish(state, Rejected(peer=state.peer, accept_ns=state.accept_ns,
                                         reason=f"{what} within {self.idle_timeout_ns / 1e9:g} s (idle {waited:.1f} s)",
                                         conn=state.request.conn if state.request else None))  # fmt: skip
        if self.accept_paused_until_ns is not None and now >= self.accept_paused_until_ns:
            self.accept_paused_until_ns = None
            self.selector.register(self.listener, selectors.EVENT_READ, None)

    def _next_wake_s(self, now: int) -> float:
        deadlines = [p.deadline_ns for p in self.peers.values()]
        if self.accept_paused_until_ns is not None:
            deadlines.append(self.accept_paused_until_ns)
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, (min(deadlines) - now) / 1e9))

    def _read(self, state: _Peer) -> None:
        now = time.monotonic_ns()
        try:
            chunk = state.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as err:
            chunk, reason = b"", err.strerror or str(err)
        else:
            reason = "closed by peer"
        if not chunk:
            if state.first_bytes_ns is None:
                self._finish(state, Loser(peer=state.peer, accept_ns=state.accept_ns, closed_ns=now, mptcp=state.mptcp,
                                          reason=reason))  # fmt: skip
            elif state.request is not None:
                self._finish(state, Closed.of(state.request, now))
            else:  # bytes came, but no complete request line: the client gave up on it
                self._finish(state, Rejected(peer=state.peer, accept_ns=state.accept_ns,
                                             reason=f"closed before a complete request line ({reason})"))  # fmt: skip
            return
        if state.first_bytes_ns is None:
            state.first_bytes_ns = now
        if state.answered:
            return  # the client only closes after our reply; anything more is ignored
        state.buffer += chunk
        if b"\n" not in state.buffer:
            if len(state.buffer) > MAX_REQUEST:
                self._reject(state, "request line longer than 4096 bytes")
            return
        line = state.buffer.split(b"\n", 1)[0]
        try:
            conn = parse_request(line)
        except ValueError as err:
            self._reject(state, str(err))
            return
        state.answered = True
        state.deadline_ns = now + self.idle_timeout_ns
        reply_error = None
        try:
            state.sock.send(REPLY)
        except OSError as err:
            reply_error = err.strerror
        state.request = Request(
            conn=conn,
            peer=state.peer,
            mptcp=state.mptcp,
            accept_ns=state.accept_ns,
            first_bytes_ns=state.first_bytes_ns,
            request_done_ns=now,
            reply_error=reply_error,
        )
        self.emit(state.request)

    def _reject(self, state: _Peer, reason: str) -> None:
        self.peers.pop(state.sock.fileno(), None)
        self.selector.unregister(state.sock)
        kernel.abort(state.sock)
        self.emit(Rejected(peer=state.peer, accept_ns=state.accept_ns, reason=reason))

    def serve_once(self) -> None:
        """One turn of the loop: wait for events (at most until the next deadline), handle them."""
        for key, _ in self.selector.select(self._next_wake_s(time.monotonic_ns())):
            if key.data is None:
                self._accept()
            elif key.data.sock.fileno() in self.peers:
                self._read(key.data)
        self._expire(time.monotonic_ns())

    def serve_forever(self) -> None:
        """Serve until interrupted (SIGTERM/SIGINT raise in the caller's handlers)."""
        while True:
            self.serve_once()

    def close(self) -> None:
        """Close the listener and every accepted socket."""
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.listener.close()
        self.selector.close()
