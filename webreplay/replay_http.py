"""One accepted connection of the origin replay server (see ``webreplay.server``): the h11 loop that
reads requests within the ``ServerLimits`` (head size, body size, idle timeout per read, a deadline
for the whole request from its first byte), answers each from the active site's recorded exchanges
(an ``https`` request recorded only over ``http`` is a browser's HSTS upgrade and gets the recorded
answer, counted apart), or ``404``: counted as a browser's own request (``/favicon.ico``) or else as
a replay miss; a protocol error closes the connection. Requests and bytes are counted in the
``ReplayState``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, NoReturn

import h11

from webreplay.replay_config import Listener
from webreplay.replay_index import _reason, is_browser_initiated, request_authority
from webreplay.replay_state import ConnectionRecord, ReplayState, RequestLogEntry

# The logger of the replay server as a whole (its records kept the name they had when the server was
# one module).
log = logging.getLogger("webreplay.server")

#: Statuses whose responses carry no body (and so no Content-Length from us).
BODYLESS_STATUSES = frozenset({204, 304})
READ_CHUNK = 65536
#: After an error response, how long and how much of the client's remaining input is drained so
#: that closing does not reset the connection before the client has read the answer.
LINGER_S = 1.0
LINGER_BYTES = 1 << 20


class _CloseConnectionError(Exception):
    """Ends a connection's loop; the argument is the close reason for the log."""


def _simple_response(status: int, text: str, *, close: bool) -> tuple[h11.Response, bytes]:
    body = text.encode("utf-8", "replace")
    headers = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Content-Length", str(len(body)).encode())]
    if close:
        headers.append((b"Connection", b"close"))
    return h11.Response(status_code=status, reason=_reason(status), headers=headers), body


class _HttpConnection:
    """The h11 loop of one accepted connection."""

    def __init__(
        self,
        state: ReplayState,
        listener: Listener,
        record: ConnectionRecord,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.state = state
        self.limits = state.limits
        self.listener = listener
        self.record = record
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self.eof = False
        self.method = b""  # of the request being answered (HEAD answers carry no body)
        self.request_deadline: float | None = None  # loop time the request being read must be complete by
        # what the last request was (page, upgraded, browser, miss) and its host, for the request log
        self._last_kind, self._last_host = "", ""

    async def _send(self, *events: h11.Event) -> None:
        data = b"".join(self.conn.send(event) or b"" for event in events)
        self.writer.write(data)
        self.record.wire_bytes += len(data)
        self.state.counters.wire_bytes += len(data)
        try:
            async with asyncio.timeout(self.limits.idle_timeout_s):
                await self.writer.drain()
        except TimeoutError:
            self.state.counters.idle_timeouts += 1
            raise _CloseConnectionError("idle timeout (client not reading)") from None

    async def _next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.eof:  # h11 has the EOF already; NEED_DATA again should not happen
                raise _CloseConnectionError("peer closed")
            loop = asyncio.get_running_loop()
            wait = self.limits.idle_timeout_s
            if self.request_deadline is not None:
                wait = min(wait, self.request_deadline - loop.time())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    data = await self.reader.read(READ_CHUNK)
            except TimeoutError:
                if self.request_deadline is not None and loop.time() >= self.request_deadline:
                    self.state.counters.request_timeouts += 1
                    self.request_deadline = None  # the 408 below is not part of the request
                    await self._error(408, f"request not complete within {self.limits.request_timeout_s:g} s",
                                      linger=False)  # fmt: skip
                self.state.counters.idle_timeouts += 1
                raise _CloseConnectionError("idle timeout") from None
            if data and self.request_deadline is None and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                self.request_deadline = loop.time() + self.limits.request_timeout_s
            self.eof = not data
            self.conn.receive_data(data)

    async def _error(self, status: int, reason: str, *, linger: bool = True) -> NoReturn:
        """Answer a protocol error (if h11 still lets us), log it, and end the connection (after
        draining the client's input briefly, unless ``linger`` is false: a client too slow to send
        its request gets no more time)."""
        if self.eof and status == 400:
            raise _CloseConnectionError(f"peer closed mid-request ({reason})")
        peer, local = self.record.peer, self.record.local
        log.warning("bad request from %s to %s: %s (answering %d)", peer, local, reason, status)
        self.state.record_error(status, reason, self.record.peer)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await self._send_simple(status, f"{status}: {reason}\n", close=True)
        if linger:
            await self._linger()
        raise _CloseConnectionError(f"error {status}: {reason}")

    async def _send_simple(self, status: int, text: str, *, close: bool) -> None:
        response, body = _simple_response(status, text, close=close)
        if self.method == b"HEAD":
            await self._send(response, h11.EndOfMessage())
        else:
            await self._send(response, h11.Data(data=body), h11.EndOfMessage())

    async def _linger(self) -> None:
        """Half-close and drain what the client still sends, briefly, so it can read our answer."""
        if self.writer.can_write_eof():
            with contextlib.suppress(OSError):
                self.writer.write_eof()
        drained = 0
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(LINGER_S):
                while drained < LINGER_BYTES:
                    chunk = await self.reader.read(READ_CHUNK)
                    if not chunk:
                        break
                    drained += len(chunk)

    async def run(self) -> str:
        """Serve requests until the connection ends; returns the close reason."""
        try:
            while True:
                try:
                    event = await self._next_event()
                except h11.RemoteProtocolError as err:
                    await self._error(err.error_status_hint, str(err))
                if isinstance(event, h11.ConnectionClosed):
                    return "peer closed"
                if event is h11.PAUSED:  # both sides done but the cycle not restarted: cannot happen
                    return "paused"
                if isinstance(event, h11.Request):
                    await self._handle(event)
                    self.request_deadline = None  # read completely (the body too): the next one starts anew
                    if self.conn.our_state is h11.MUST_CLOSE:
                        return "server closed (Connection: close or HTTP/1.0)"
                    if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                        self.conn.start_next_cycle()
                        self.method = b""
                    else:
                        return f"cannot reuse (ours {self.conn.our_state}, theirs {self.conn.their_state})"
        except _CloseConnectionError as closing:
            return str(closing)
        except (ConnectionError, OSError) as err:
            return f"connection error: {err!r}"
        except h11.LocalProtocolError as err:  # a bug of ours, not the client's: keep serving others
            log.error("%s: cannot send a response: %s", self.record.peer, err)
            return f"internal error: {err}"

    async def _handle(self, request: h11.Request) -> None:
        rx_ns = time.monotonic_ns()
        wire_before = self.record.wire_bytes
        self._last_kind, self._last_host = "error", ""
        status = await self._answer(request)
        if len(self.record.request_log) < self.limits.max_log_entries:
            self.record.request_log.append(RequestLogEntry(
                rx_ns=rx_ns, tx_ns=time.monotonic_ns(), target=request.target.decode("ascii", "replace"),
                status=status, bytes=self.record.wire_bytes - wire_before, host=self._last_host,
                kind=self._last_kind))  # fmt: skip

    async def _answer(self, request: h11.Request) -> int:
        """Answer one request; returns the status sent."""
        self.method = request.method
        self.record.requests += 1
        self.state.counters.requests += 1
        head = len(request.method) + len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if head > self.limits.max_header_bytes:
            await self._error(431, f"request head of {head} bytes exceeds {self.limits.max_header_bytes}")
        await self._discard_body(request)

        method = request.method.decode("ascii", "replace")
        host_header = next((v for n, v in request.headers if n == b"host"), None)
        host, target, sent_host = request_authority(host_header, request.target)
        scheme = self.listener.scheme
        index = self.state.active
        found = index.lookup(method, scheme, host, target) if host else None
        kind = "page"
        if found is None and scheme == "https" and host:
            # A browser's HSTS upgrade of a request recorded over http (its preload list forces
            # https on some recorded hosts): the recorded answer, counted apart.
            found = index.lookup(method, "http", host, target)
            kind = "upgraded"
        url = f"{scheme}://{sent_host}{target}"
        if found is None:
            if is_browser_initiated(method, target):
                self.state.record_browser_request(method, url, self.record.peer)
                self._last_kind, self._last_host = "browser", host
                await self._send_simple(404, f"a browser's own request, not part of {index.site.name}: {url}\n",
                                        close=False)  # fmt: skip
                return 404
            self.state.record_miss(method, url, self.record.peer)
            log.info("replay miss: %s %s (site %s)", method, url, index.site.name)
            self._last_kind, self._last_host = "miss", host
            await self._send_simple(404, f"not in the recording of {index.site.name}: {url}\n", close=False)
            return 404
        self._last_kind, self._last_host = kind, host
        headers = list(found.headers)
        if found.status not in BODYLESS_STATUSES:
            headers.append((b"Content-Length", str(len(found.body)).encode()))
        response = h11.Response(status_code=found.status, reason=found.reason, headers=headers)
        send_body = method != "HEAD" and found.status not in BODYLESS_STATUSES and bool(found.body)
        events: list[h11.Event] = [response]
        if send_body:
            events.append(h11.Data(data=found.body))
        events.append(h11.EndOfMessage())
        await self._send(*events)
        self.state.record_served(found.exchange.url, upgraded=kind == "upgraded")
        if send_body:
            self.state.counters.body_bytes += len(found.body)
        return found.status

    async def _discard_body(self, request: h11.Request) -> None:
        """Read the request body up to the limit, discarding it (413 beyond)."""
        declared = next((v for n, v in request.headers if n == b"content-length"), None)
        limit = self.limits.max_body_bytes
        if declared is not None and int(declared) > limit:
            await self._error(413, f"request body of {int(declared)} bytes exceeds {limit}")
        if self.conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        received = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.EndOfMessage):
                return
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > limit:
                    await self._error(413, f"request body exceeds {limit} bytes")
            elif isinstance(event, h11.ConnectionClosed):
                raise _CloseConnectionError("peer closed mid-request")
