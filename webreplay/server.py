"""The origin replay server of experiment 2: recorded responses over HTTP/1.1 (asyncio + h11).

One process holds every origin of the replayed pages (in experiment 2: one Mininet host holding
every origin address, listening on 0.0.0.0:80 and 0.0.0.0:443 with one certificate covering every
host name). It answers each request from the *active site*'s recorded exchanges:

* key: the listener's scheme, the Host header (lower case, port and trailing dot stripped; the
  authority of an absolute-form target wins) and the request target; HEAD is looked up as GET;
* exact match on (method, scheme, host, target) first (the first recording wins on duplicates);
* else Mahimahi's replay rule: same method, scheme and host, both targets carrying a query and
  equal up to the '?', and the longest common prefix of the targets wins (first on ties);
* else ``404`` counted as a replay miss, with its URL.

Responses are the recorded status, reason and headers (framing and hop-by-hop headers dropped)
with ``Content-Length`` framing of the recorded body; keep-alive and pipelining follow h11.

Bounds (``ServerLimits``): request head size (h11's ``max_incomplete_event_size`` plus an
explicit check of the parsed head, answered ``431``), request bodies read and discarded up to a
limit (``413``), an idle timeout per connection (also bounding slow writes and TLS handshakes), and
a cap on open connections (further connections are reset at once and counted). Malformed requests
get h11's ``400`` and the connection closes; the reason is logged and kept in the stats.

Because two sites may record the same host, exactly one site is active at a time, switched through
a control channel: a Unix-domain socket (a path, so it works across network namespaces) taking one
JSON object per line and answering one JSON object per line (``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``):

* ``{"cmd": "ping"}``: ``{"ok": true, "pid": N, "active": {"corpus": C, "site": S} | null}``;
* ``{"cmd": "activate", "site": NAME}`` (plus ``"corpus"`` when two corpora have that name):
  later requests use that site; answers the new ``active``;
* ``{"cmd": "stats"}``: ``{"ok": true, "stats": {...}}``: served responses, body and wire bytes,
  misses with their URLs, protocol errors with reasons, connection counters and the connection
  log (open/close ``time.monotonic_ns()``, peer, local address, TLS, requests, bytes, close reason);
* ``{"cmd": "reset"}``: zero the counters and logs (connections still open stay in the log with
  zeroed counts).

Run as ``python -m webreplay.server --corpus-spec SPEC.json --control PATH --cert C --key K``
(see ``replay_server_command``); the spec lists (corpus, site) pairs loaded through
``webreplay.corpus.load_site``. The process prints one ``READY {json}`` line on stdout once every
socket listens, and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import h11

from webreplay.model import RecordedExchange, Site

log = logging.getLogger(__name__)

#: Response headers never replayed: the server does its own framing and connection management.
DROPPED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
)
#: Statuses whose responses carry no body (and so no Content-Length from us).
BODYLESS_STATUSES = frozenset({204, 304})
READ_CHUNK = 65536
#: Longest Unix-domain socket path (sun_path is 108 bytes including the terminating NUL).
MAX_UNIX_PATH = 107
#: After an error response, how long and how much of the client's remaining input is drained so
#: that closing does not reset the connection before the client has read the answer.
LINGER_S = 1.0
LINGER_BYTES = 1 << 20
CLOSE_TIMEOUT_S = 2.0


class ReplayConfigError(ValueError):
    """A bad server setting (listener, limit, site list, control path); the message names it."""


class ReplayControlError(RuntimeError):
    """The control channel answered ``ok: false`` (or could not be reached)."""


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ReplayConfigError(f"{name}={value!r}: must be an integer in {low}..{high}")


def _check_seconds(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ReplayConfigError(f"{name}={value!r}: must be a number of seconds in {low:g}..{high:g}")


@dataclass(frozen=True)
class Listener:
    """One listening socket: address (``0.0.0.0`` for all), port (0: ephemeral) and whether TLS."""

    ip: str
    port: int
    tls: bool = False

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.ip)
        except ValueError:
            raise ReplayConfigError(f"listener ip={self.ip!r}: not an IP address") from None
        _check_int("listener port", self.port, 0, 65535)
        if not isinstance(self.tls, bool):
            raise ReplayConfigError(f"listener tls={self.tls!r}: must be true or false")

    @property
    def scheme(self) -> str:
        """``https`` for TLS listeners, else ``http``."""
        return "https" if self.tls else "http"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (READY line, metadata)."""
        return asdict(self)


def parse_listen(text: str, *, tls: bool) -> Listener:
    """Parse ``IP:PORT`` (``[IPv6]:PORT`` for IPv6) as given on the command line."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ReplayConfigError(f"listen={text!r}: expected IP:PORT (or [IPv6]:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Listener(host, int(port), tls)


@dataclass(frozen=True)
class ServerLimits:
    """Resource bounds of the replay server.

    Attributes:
        max_header_bytes: request line plus header fields; larger heads get 431 and a close.
        max_body_bytes: request bodies are read and discarded up to this size; larger get 413.
        idle_timeout_s: a connection waiting this long for the client (to send a request, or to
            read a response) is closed.
        handshake_timeout_s: limit on a TLS handshake.
        max_connections: open connections; more are reset at once and counted as rejected.
        max_log_entries: length limit of each log in the stats (misses, errors, closed
            connections); counters keep counting past it.
    """

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    idle_timeout_s: float = 30.0
    handshake_timeout_s: float = 10.0
    max_connections: int = 1024
    max_log_entries: int = 100_000

    def __post_init__(self) -> None:
        _check_int("max_header_bytes", self.max_header_bytes, 256, 1 << 24)
        _check_int("max_body_bytes", self.max_body_bytes, 0, 1 << 32)
        _check_seconds("idle_timeout_s", self.idle_timeout_s, 0.01, 86400.0)
        _check_seconds("handshake_timeout_s", self.handshake_timeout_s, 0.01, 600.0)
        _check_int("max_connections", self.max_connections, 1, 1_000_000)
        _check_int("max_log_entries", self.max_log_entries, 1, 10_000_000)


# ---------------------------------------------------------------------------------------------
# Lookup: one index per site.


@dataclass(frozen=True)
class PreparedResponse:
    """A recorded exchange turned into what h11 sends (header bytes validated once, at load)."""

    exchange: RecordedExchange
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def _header_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def prepare_response(exchange: RecordedExchange) -> PreparedResponse:
    """Validate a recorded response once: drop framing/hop-by-hop and unsendable header fields.

    A recorded status outside 200..599 cannot be replayed as a final response: it becomes 502
    with an explanatory body (and a warning).
    """
    headers: list[tuple[bytes, bytes]] = []
    for name, value in exchange.headers:
        if name.lower() in DROPPED_HEADERS:
            continue
        pair = (_header_bytes(name), _header_bytes(value.strip()))
        try:
            h11.Response(status_code=200, headers=[pair])
        except h11.LocalProtocolError as err:
            log.warning("%s: dropping recorded header %r: %s", exchange.url, name, err)
            continue
        headers.append(pair)
    status, body = exchange.status, exchange.body
    reason = _header_bytes(exchange.reason) or _reason(status)  # HTTP/2 recordings have no reason
    if not 200 <= status <= 599:
        log.warning("%s: recorded status %d cannot be replayed; serving 502", exchange.url, status)
        status, reason, headers = 502, b"Bad Gateway", [(b"Content-Type", b"text/plain")]
        body = f"recorded status {exchange.status} is not a final response\n".encode()
    try:
        h11.Response(status_code=status, reason=reason, headers=[])
    except h11.LocalProtocolError:
        reason = b""
    return PreparedResponse(exchange, status, reason, tuple(headers), body)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ExchangeIndex:
    """The exchanges of one site, indexed for the exact and the Mahimahi lookups."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._exact: dict[tuple[str, str, str, str], PreparedResponse] = {}
        self._by_path: dict[tuple[str, str, str, str], list[PreparedResponse]] = {}
        for exchange in site.exchanges:
            prepared = prepare_response(exchange)
            key = (exchange.method.upper(), exchange.scheme, exchange.host.lower(), exchange.target)
            self._exact.setdefault(key, prepared)
            path, query_sep, _ = exchange.target.partition("?")
            if query_sep:
                self._by_path.setdefault((*key[:3], path), []).append(prepared)

    def lookup(self, method: str, scheme: str, host: str, target: str) -> PreparedResponse | None:
        """The recorded response for a request, or None (a replay miss). HEAD looks up GET."""
        method = method.upper()
        if method == "HEAD":
            method = "GET"
        found = self._exact.get((method, scheme, host, target))
        if found is not None:
            return found
        path, query_sep, _ = target.partition("?")
        if not query_sep:
            return None
        best: PreparedResponse | None = None
        best_len = -1
        for candidate in self._by_path.get((method, scheme, host, path), ()):
            length = _common_prefix(target, candidate.exchange.target)
            if length > best_len:
                best, best_len = candidate, length
        return best


def request_authority(host_header: bytes | None, target: bytes) -> tuple[str, str, str]:
    """(host, target, host as sent) of a request: lower-case host without port or trailing dot.

    An absolute-form target (``http://host/path``) supplies both host and origin-form target.
    """
    raw_target = target.decode("latin-1")
    lowered = raw_target.lower()
    authority = (host_header or b"").decode("latin-1").strip()
    if lowered.startswith(("http://", "https://")):
        rest = raw_target.split("://", 1)[1]
        slash = rest.find("/")
        authority, raw_target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    sent = authority.lower()
    host = sent
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    else:
        name, sep, port = host.rpartition(":")
        if sep and port.isdigit():
            host = name
    return host.rstrip("."), raw_target, sent


# ---------------------------------------------------------------------------------------------
# State shared by every connection: sites, active site, counters and logs.


@dataclass
class ConnectionRecord:
    """One connection in the stats: times are ``time.monotonic_ns()``; ``close_ns`` None while open."""

    id: int
    peer: str
    local: str
    tls: bool
    open_ns: int
    close_ns: int | None = None
    requests: int = 0
    wire_bytes: int = 0
    close_reason: str = ""


@dataclass
class Counters:
    """Counters since start or the last reset."""

    since_ns: int
    requests: int = 0
    served: int = 0
    body_bytes: int = 0
    wire_bytes: int = 0
    misses: int = 0
    bad_requests: int = 0
    connections_opened: int = 0
    connections_rejected: int = 0
    tls_failures: int = 0
    idle_timeouts: int = 0
    peak_open: int = 0
    log_dropped: int = 0
    miss_log: list[dict[str, Any]] = field(default_factory=list)
    error_log: list[dict[str, Any]] = field(default_factory=list)
    closed: list[ConnectionRecord] = field(default_factory=list)


def _endpoint(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


class ReplayState:
    """Sites, the active one, and the counters; no I/O (the control commands act on this)."""

    def __init__(self, sites: Sequence[Site], limits: ServerLimits, active: str | None = None) -> None:
        if not sites:
            raise ReplayConfigError("sites: empty; the server needs at least one site")
        self.limits = limits
        self.indexes: dict[tuple[str, str], ExchangeIndex] = {}
        for site in sites:
            key = (site.corpus, site.name)
            if key in self.indexes:
                raise ReplayConfigError(f"sites: {site.corpus}/{site.name} given twice")
            self.indexes[key] = ExchangeIndex(site)
        self.active: ExchangeIndex = self.indexes[(sites[0].corpus, sites[0].name)]
        if active is not None:
            self.activate(active)
        self.counters = Counters(since_ns=time.monotonic_ns())
        self.open: dict[int, ConnectionRecord] = {}
        self._next_id = 1

    def find(self, name: str, corpus: str | None = None) -> ExchangeIndex:
        """The site called ``name`` (and from ``corpus``, needed when two corpora have the name)."""
        matches = [i for (c, n), i in self.indexes.items() if n == name and corpus in (None, c)]
        if not matches:
            known = ", ".join(f"{c}/{n}" for c, n in self.indexes)
            asked = f"site={name!r}" + (f" corpus={corpus!r}" if corpus else "")
            raise ReplayControlError(f"{asked}: unknown (known: {known})")
        if len(matches) > 1:
            corpora = sorted(i.site.corpus for i in matches)
            raise ReplayControlError(f'site={name!r}: in several corpora {corpora}; add "corpus"')
        return matches[0]

    def activate(self, name: str, corpus: str | None = None) -> None:
        """Make a site the one requests are answered from."""
        self.active = self.find(name, corpus)
        log.info("active site: %s/%s", self.active.site.corpus, self.active.site.name)

    def active_info(self) -> dict[str, str]:
        """``{"corpus": ..., "site": ...}`` of the active site."""
        return {"corpus": self.active.site.corpus, "site": self.active.site.name}

    def _append(self, entries: list[Any], entry: Any) -> None:
        if len(entries) < self.limits.max_log_entries:
            entries.append(entry)
        else:
            self.counters.log_dropped += 1

    def open_connection(self, peer: str, local: str, tls: bool) -> ConnectionRecord | None:
        """Register a connection (``local``: the address it reached), or None (rejected) at the cap."""
        if len(self.open) >= self.limits.max_connections:
            self.counters.connections_rejected += 1
            return None
        record = ConnectionRecord(
            id=self._next_id,
            peer=peer,
            local=local,
            tls=tls,
            open_ns=time.monotonic_ns(),
        )
        self._next_id += 1
        self.open[record.id] = record
        self.counters.connections_opened += 1
        self.counters.peak_open = max(self.counters.peak_open, len(self.open))
        return record

    def close_connection(self, record: ConnectionRecord, reason: str) -> None:
        """Mark a connection closed and move it to the log."""
        if self.open.pop(record.id, None) is None:
            return
        record.close_ns = time.monotonic_ns()
        record.close_reason = reason
        self._append(self.counters.closed, record)

    def record_miss(self, method: str, url: str, peer: str) -> None:
        """Count a request the active site has no recording for."""
        self.counters.misses += 1
        site = self.active.site
        self._append(
            self.counters.miss_log,
            {"ns": time.monotonic_ns(), "method": method, "url": url, "peer": peer, "site": site.name},
        )

    def record_error(self, status: int, reason: str, peer: str) -> None:
        """Count a request answered with a protocol error (400, 413, 431, ...) and keep the reason."""
        self.counters.bad_requests += 1
        entry = {"ns": time.monotonic_ns(), "status": status, "reason": reason, "peer": peer}
        self._append(self.counters.error_log, entry)

    def reset(self) -> None:
        """Zero every counter and log; open connections stay listed with zeroed counts."""
        self.counters = Counters(since_ns=time.monotonic_ns(), peak_open=len(self.open))
        for record in self.open.values():
            record.requests = 0
            record.wire_bytes = 0

    def stats(self) -> dict[str, Any]:
        """Everything the ``stats`` command reports (JSON-ready)."""
        c = self.counters
        connections = sorted([*c.closed, *self.open.values()], key=lambda r: r.id)
        return {
            "active": self.active_info(),
            "since_ns": c.since_ns,
            "now_ns": time.monotonic_ns(),
            "requests": c.requests,
            "served": c.served,
            "body_bytes": c.body_bytes,
            "wire_bytes": c.wire_bytes,
            "misses": c.misses,
            "miss_log": list(c.miss_log),
            "bad_requests": c.bad_requests,
            "error_log": list(c.error_log),
            "connections": {
                "opened": c.connections_opened,
                "open": len(self.open),
                "peak_open": c.peak_open,
                "rejected": c.connections_rejected,
                "tls_failures": c.tls_failures,
                "idle_timeouts": c.idle_timeouts,
            },
            "connection_log": [asdict(r) for r in connections],
            "log_dropped": c.log_dropped,
        }

    def control(self, command: object) -> dict[str, Any]:
        """Answer one control command (already parsed JSON); errors become ``ok: false``."""
        if not isinstance(command, dict) or not isinstance(command.get("cmd"), str):
            return {"ok": False, "error": 'expected a JSON object with a "cmd" string'}
        cmd = command["cmd"]
        try:
            if cmd == "ping":
                return {"ok": True, "pid": os.getpid(), "active": self.active_info()}
            if cmd == "stats":
                return {"ok": True, "stats": self.stats()}
            if cmd == "reset":
                self.reset()
                return {"ok": True}
            if cmd == "activate":
                name, corpus = command.get("site"), command.get("corpus")
                if not isinstance(name, str):
                    return {"ok": False, "error": f"site={name!r}: activate needs a site name"}
                if corpus is not None and not isinstance(corpus, str):
                    return {"ok": False, "error": f"corpus={corpus!r}: must be a string"}
                self.activate(name, corpus)
                return {"ok": True, "active": self.active_info()}
        except ReplayControlError as err:
            return {"ok": False, "error": str(err)}
        return {"ok": False, "error": f"cmd={cmd!r}: unknown (known: activate, ping, reset, stats)"}


# ---------------------------------------------------------------------------------------------
# Network side.


class _CloseConnectionError(Exception):
    """Ends a connection's loop; the argument is the close reason for the log."""


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


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
            try:
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    data = await self.reader.read(READ_CHUNK)
            except TimeoutError:
                self.state.counters.idle_timeouts += 1
                raise _CloseConnectionError("idle timeout") from None
            self.eof = not data
            self.conn.receive_data(data)

    async def _error(self, status: int, reason: str) -> NoReturn:
        """Answer a protocol error (if h11 still lets us), log it, and end the connection."""
        if self.eof and status == 400:
            raise _CloseConnectionError(f"peer closed mid-request ({reason})")
        peer, local = self.record.peer, self.record.local
        log.warning("bad request from %s to %s: %s (answering %d)", peer, local, reason, status)
        self.state.record_error(status, reason, self.record.peer)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await self._send_simple(status, f"{status}: {reason}\n", close=True)
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
        if found is None:
            url = f"{scheme}://{sent_host}{target}"
            self.state.record_miss(method, url, self.record.peer)
            log.info("replay miss: %s %s (site %s)", method, url, index.site.name)
            await self._send_simple(404, f"not in the recording of {index.site.name}: {url}\n", close=False)
            return
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
        self.state.counters.served += 1
        if send_body:
            self.state.counters.body_bytes += len(found.body)

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


def server_ssl_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """TLS server context with the issued certificate: TLS 1.2+, ALPN offering only HTTP/1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as err:
        raise ReplayConfigError(f"cert={str(cert)!r} key={str(key)!r}: cannot load ({err})") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _prepare_control_path(path: Path) -> None:
    """Refuse a path too long for a Unix socket or held by a live server; remove a stale socket."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ReplayConfigError(f"control={str(path)!r}: longer than {MAX_UNIX_PATH} bytes (Unix socket limit)")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ReplayConfigError(f"control={str(path)!r}: exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise ReplayConfigError(f"control={str(path)!r}: another server is listening there")


class ReplayServer:
    """Listeners, connections and the control socket around one ``ReplayState``."""

    def __init__(
        self,
        sites: Sequence[Site],
        listeners: Sequence[Listener],
        *,
        control_path: Path | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        limits: ServerLimits | None = None,
        active: str | None = None,
    ) -> None:
        if not listeners:
            raise ReplayConfigError("listeners: empty; give at least one (ip, port, tls)")
        for listener in listeners:
            if listener.tls and ssl_context is None:
                raise ReplayConfigError(f"listener {listener.ip}:{listener.port} is TLS but no certificate was given")
        self.state = ReplayState(sites, limits or ServerLimits(), active)
        self.listeners = list(listeners)
        self.control_path = Path(control_path) if control_path is not None else None
        self.ssl_context = ssl_context
        self.bound: list[Listener] = []
        self._servers: list[asyncio.Server] = []
        self._control_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Bind every listener and the control socket; ``bound`` then holds the actual ports."""
        try:
            for listener in self.listeners:
                server = await asyncio.start_server(
                    functools.partial(self._accept, listener=listener),
                    host=listener.ip,
                    port=listener.port,
                    reuse_address=True,
                    backlog=1024,
                    limit=READ_CHUNK,
                )
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
                self.bound.append(Listener(listener.ip, port, listener.tls))
            if self.control_path is not None:
                _prepare_control_path(self.control_path)
                self._control_server = await asyncio.start_unix_server(
                    self._control_client, path=str(self.control_path), limit=READ_CHUNK
                )
                self.control_path.chmod(0o600)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening, end every connection, remove the control socket."""
        for server in self._servers:
            server.close()
        if self._control_server is not None:
            self._control_server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        if self._control_server is not None and self.control_path is not None:
            await self._control_server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.control_path.unlink()
            self._control_server = None
        self._servers.clear()

    def ready_info(self) -> dict[str, Any]:
        """What the ``READY`` line reports: pid, bound listeners, control path, sites, active site."""
        return {
            "pid": os.getpid(),
            "listeners": [listener.to_dict() for listener in self.bound],
            "control": str(self.control_path) if self.control_path else None,
            "sites": [
                {"corpus": c, "site": n, "exchanges": len(i.site.exchanges), "hosts": len(i.site.hosts())}
                for (c, n), i in self.state.indexes.items()
            ],
            "active": self.state.active_info(),
        }

    def _track(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener) -> None:
        task = self._track()
        peer = _endpoint(writer.get_extra_info("peername"))
        local = _endpoint(writer.get_extra_info("sockname"))
        record = self.state.open_connection(peer, local, listener.tls)
        if record is None:
            log.warning("connection from %s rejected: %d open (max_connections)", peer, len(self.state.open))
            writer.transport.abort()
            self._tasks.discard(task)
            return
        reason = "server stopped"
        try:
            if listener.tls:
                # Straight after accept (no await before it), so the ClientHello reaches TLS.
                assert self.ssl_context is not None  # checked in __init__
                timeout = self.state.limits.handshake_timeout_s
                try:
                    await writer.start_tls(self.ssl_context, ssl_handshake_timeout=timeout)
                except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as err:
                    self.state.counters.tls_failures += 1
                    reason = f"TLS handshake failed: {err!r}"
                    log.info("%s: %s", peer, reason)
                    return
            reason = await _HttpConnection(self.state, listener, record, reader, writer).run()
        finally:
            self.state.close_connection(record, reason)
            await _close(writer)
            self._tasks.discard(task)

    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._track()
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(json.dumps({"ok": False, "error": f"line longer than {READ_CHUNK} bytes"}).encode())
                    writer.write(b"\n")
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    command = json.loads(line)
                except json.JSONDecodeError as err:
                    answer: dict[str, Any] = {"ok": False, "error": f"not JSON: {err}"}
                else:
                    answer = self.state.control(command)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            await _close(writer)
            self._tasks.discard(task)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()


# ---------------------------------------------------------------------------------------------
# Control client, command line.


def control_request(path: Path | str, command: Mapping[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """Send one control command to a running server and return its answer (``ok`` true).

    Raises ReplayControlError when the server answers ``ok: false`` or cannot be reached.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(dict(command)).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except OSError as err:
            raise ReplayControlError(f"control {str(path)!r}: {err}") from None
    try:
        answer = json.loads(data)
    except json.JSONDecodeError:
        raise ReplayControlError(f"control {str(path)!r}: bad answer {data[:200]!r}") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else answer
        raise ReplayControlError(f"control {command.get('cmd')!r}: {error}")
    return answer


def parse_corpus_spec(text: str, where: str = "corpus spec") -> list[tuple[str, str]]:
    """(corpus, site) pairs of a spec: a JSON list of ``{"corpus": C, "site": S}`` or ``[C, S]``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReplayConfigError(f"{where}: not JSON ({err})") from None
    if not isinstance(data, list) or not data:
        raise ReplayConfigError(f"{where}: expected a non-empty JSON list of (corpus, site) pairs")
    pairs = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and set(item) == {"corpus", "site"}:
            pair = (item["corpus"], item["site"])
        elif isinstance(item, list) and len(item) == 2:
            pair = (item[0], item[1])
        else:
            raise ReplayConfigError(f'{where}[{i}]={item!r}: expected {{"corpus": C, "site": S}} or [C, S]')
        if not all(isinstance(x, str) and x for x in pair):
            raise ReplayConfigError(f"{where}[{i}]={item!r}: corpus and site must be non-empty strings")
        pairs.append(pair)
    return pairs


def corpus_spec_text(pairs: Iterable[tuple[str, str]]) -> str:
    """The JSON text of a corpus spec listing ``pairs`` (the inverse of ``parse_corpus_spec``)."""
    return json.dumps([{"corpus": c, "site": s} for c, s in pairs], indent=1) + "\n"


def replay_server_command(
    corpus_spec: Path | str,
    control: Path | str,
    *,
    cert: Path | str | None,
    key: Path | str | None,
    listeners: Sequence[Listener] = (Listener("0.0.0.0", 80), Listener("0.0.0.0", 443, tls=True)),
    limits: ServerLimits | None = None,
    active: str | None = None,
) -> list[str]:
    """Command line of the replay server process (run with this interpreter, PYTHONPATH = project)."""
    limits = limits or ServerLimits()
    argv = [sys.executable, "-m", "webreplay.server", "--corpus-spec", str(corpus_spec), "--control", str(control)]
    if cert is not None and key is not None:
        argv += ["--cert", str(cert), "--key", str(key)]
    elif any(listener.tls for listener in listeners):
        raise ReplayConfigError("cert/key: a TLS listener needs both")
    for listener in listeners:
        ip = f"[{listener.ip}]" if ":" in listener.ip else listener.ip
        argv += ["--listen-tls" if listener.tls else "--listen", f"{ip}:{listener.port}"]
    argv += [
        "--max-header-bytes", str(limits.max_header_bytes), "--max-body-bytes", str(limits.max_body_bytes),
        "--idle-timeout", f"{limits.idle_timeout_s:g}", "--handshake-timeout", f"{limits.handshake_timeout_s:g}",
        "--max-connections", str(limits.max_connections), "--max-log-entries", str(limits.max_log_entries),
    ]  # fmt: skip
    if active is not None:
        argv += ["--active", active]
    return argv


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``replay_server_command``)."""
    defaults = ServerLimits()
    parser = argparse.ArgumentParser(prog="python -m webreplay.server", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-spec", action="append", required=True, type=Path, help="JSON list of (corpus, site)")
    parser.add_argument("--control", required=True, type=Path, help="Unix socket path of the control channel")
    parser.add_argument("--cert", type=Path, help="PEM certificate of the TLS listeners")
    parser.add_argument("--key", type=Path, help="PEM private key of the TLS listeners")
    parser.add_argument("--listen", action="append", default=[], help="plain HTTP listener IP:PORT (repeatable)")
    parser.add_argument("--listen-tls", action="append", default=[], help="HTTPS listener IP:PORT (repeatable)")
    parser.add_argument("--active", help="site active at start (default: the first of the spec)")
    parser.add_argument("--max-header-bytes", type=int, default=defaults.max_header_bytes)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout_s)
    parser.add_argument("--handshake-timeout", type=float, default=defaults.handshake_timeout_s)
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections)
    parser.add_argument("--max-log-entries", type=int, default=defaults.max_log_entries)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def _build(args: argparse.Namespace, load_site: Callable[[str, str], Site]) -> ReplayServer:
    limits = ServerLimits(
        max_header_bytes=args.max_header_bytes,
        max_body_bytes=args.max_body_bytes,
        idle_timeout_s=args.idle_timeout,
        handshake_timeout_s=args.handshake_timeout,
        max_connections=args.max_connections,
        max_log_entries=args.max_log_entries,
    )
    listeners = [parse_listen(t, tls=False) for t in args.listen] + [parse_listen(t, tls=True) for t in args.listen_tls]
    if not listeners:
        listeners = [Listener("0.0.0.0", 80), Listener("0.0.0.0", 443, tls=True)]
    context = None
    if args.cert is not None or args.key is not None:
        if args.cert is None or args.key is None:
            raise ReplayConfigError("--cert and --key go together")
        context = server_ssl_context(args.cert, args.key)
    pairs: list[tuple[str, str]] = []
    for spec in args.corpus_spec:
        try:
            text = spec.read_text()
        except OSError as err:
            raise ReplayConfigError(f"--corpus-spec {str(spec)!r}: {err}") from None
        pairs += parse_corpus_spec(text, where=str(spec))
    sites = [load_site(corpus, name) for corpus, name in pairs]
    return ReplayServer(
        sites, listeners, control_path=args.control, ssl_context=context, limits=limits, active=args.active
    )


async def _serve(server: ReplayServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    try:
        sys.stdout.write(f"READY {json.dumps(server.ready_info())}\n")
        sys.stdout.flush()
        await stop.wait()
        log.info("stopping")
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None, load_site: Callable[[str, str], Site] | None = None) -> int:
    """Load the sites, serve until SIGTERM/SIGINT; 0 on a clean stop, 1 on a start-up error."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s webreplay.server %(levelname)s %(message)s")
    if load_site is None:
        from webreplay.corpus import load_site as corpus_load_site  # type: ignore[import-not-found,unused-ignore]

        load_site = corpus_load_site
    try:
        server = _build(args, load_site)
        asyncio.run(_serve(server))
    except (ValueError, OSError) as err:  # ReplayConfigError, CorpusError, bind failures
        print(f"webreplay.server: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
