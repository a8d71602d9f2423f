"""Lookup of recorded answers for the origin replay server (see ``webreplay.server``): each recorded
exchange is turned once, at load, into the response h11 sends (``prepare_response``), the exchanges
of a site are indexed for the exact and the Mahimahi lookups (``ExchangeIndex``), and a request's
host and target are taken from its Host header or absolute-form target (``request_authority``).
"""

from __future__ import annotations

import http
import logging
from dataclasses import dataclass

import h11

from webreplay.model import RecordedExchange, Site

# The logger of the replay server as a whole (its records kept the name they had when the server was
# one module).
log = logging.getLogger("webreplay.server")

#: Response headers never replayed: the server does its own framing and connection management.
DROPPED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
)


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


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


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


#: Paths a browser asks for on its own, not because the page references them (the site icon). Not
#: recorded: answered 404 and counted apart from the page's misses.
BROWSER_INITIATED_PATHS = frozenset({"/favicon.ico"})


def is_browser_initiated(method: str, target: str) -> bool:
    """A GET of a path browsers request on their own (``BROWSER_INITIATED_PATHS``, query ignored)."""
    return method.upper() in ("GET", "HEAD") and target.partition("?")[0] in BROWSER_INITIATED_PATHS


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
