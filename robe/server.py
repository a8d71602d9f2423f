"""Server endpoint: accepts MPTCP (and plain TCP) connections and logs, per accepted socket, when it
was accepted and when the client's first request bytes arrived.

Each accepted socket is logged as JSON lines on the log stream:

* ``{"event": "request", "conn": ID, "accept_ns", "first_bytes_ns", "peer", "mptcp", ...}`` when a
  complete request line arrived (the server answers ``OK``), and ``{"event": "closed", ...}`` with
  the same fields plus ``closed_ns`` when the client closes it;
* ``{"event": "loser", "peer", "accept_ns", "closed_ns", "reason"}`` when the socket closed or was
  reset before any request byte: a RobE attempt the client reset after another path won. It is
  counted, never mistaken for the connection.
* ``{"event": "rejected", ..., "reason"}`` for a malformed or oversized request line.

Times are ``time.monotonic_ns()``, the clock the client logs with.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from robe import kernel
from robe.strategies import Protocol

MAX_REQUEST = 4096
REPLY = b"OK\n"


@dataclass
class _Peer:
    sock: socket.socket
    peer: str
    accept_ns: int
    mptcp: bool | None
    first_bytes_ns: int | None = None
    buffer: bytes = b""
    answered: bool = False
    record: dict[str, Any] = field(default_factory=dict)


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
    """A listening socket and its accepted connections, served by one selector loop."""

    def __init__(self, bind: str, port: int, emit: Callable[[dict[str, Any]], None], backlog: int = 512) -> None:
        self.emit = emit
        self.listener = kernel.open_socket(Protocol.MPTCP)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((bind, port))
        self.listener.listen(backlog)
        self.address = self.listener.getsockname()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            now = time.monotonic_ns()
            sock.setblocking(False)
            state = _Peer(sock, f"{peer[0]}:{peer[1]}", now, kernel.is_mptcp(sock))
            self.selector.register(sock, selectors.EVENT_READ, state)

    def _finish(self, state: _Peer, record: dict[str, Any]) -> None:
        self.selector.unregister(state.sock)
        state.sock.close()
        if record:
            self.emit(record)

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
                self._finish(state, {"event": "loser", "peer": state.peer, "accept_ns": state.accept_ns,
                                     "closed_ns": now, "mptcp": state.mptcp, "reason": reason})  # fmt: skip
            else:
                self._finish(state, {**state.record, "event": "closed", "closed_ns": now})
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
        state.record = {
            "event": "request", "conn": conn, "peer": state.peer, "mptcp": state.mptcp,
            "accept_ns": state.accept_ns, "first_bytes_ns": state.first_bytes_ns, "request_done_ns": now,
        }  # fmt: skip
        try:
            state.sock.send(REPLY)
        except OSError as err:
            state.record["reply_error"] = err.strerror
        self.emit(dict(state.record))

    def _reject(self, state: _Peer, reason: str) -> None:
        self.selector.unregister(state.sock)
        kernel.abort(state.sock)
        self.emit({"event": "rejected", "peer": state.peer, "accept_ns": state.accept_ns, "reason": reason})

    def serve_forever(self) -> None:
        """Serve until interrupted (SIGTERM/SIGINT raise in the caller's handlers)."""
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)

    def close(self) -> None:
        """Close the listener and every accepted socket."""
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()
