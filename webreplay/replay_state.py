"""State of the origin replay server shared by every connection (see ``webreplay.server``): the
sites and the active one, the counters and logs of requests, misses, errors and connections, and
the answers to the control commands (ping, activate, stats, reset); no I/O.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from robe_lab.records import RecordError, build
from webreplay.model import Site
from webreplay.replay_config import ReplayConfigError, ReplayControlError, ServerLimits
from webreplay.replay_index import ExchangeIndex

# The logger of the replay server as a whole (its records kept the name they had when the server was
# one module).
log = logging.getLogger("webreplay.server")


@dataclass(frozen=True)
class RequestLogEntry:
    """One request of a connection: ``rx_ns`` request head complete, ``tx_ns`` response handed to the
    kernel, the ``status`` sent, ``bytes`` on the wire, the ``host`` asked for and the answer's ``kind``."""

    rx_ns: int
    tx_ns: int
    target: str
    status: int
    bytes: int
    host: str
    kind: str


@dataclass
class ConnectionRecord:
    """One connection in the stats: times are ``time.monotonic_ns()``; ``close_ns`` None while open.
    The ``stats`` answer carries them as JSON; ``connection_log`` reads them back."""

    id: int
    peer: str
    local: str
    tls: bool
    open_ns: int
    close_ns: int | None = None
    requests: int = 0
    wire_bytes: int = 0
    close_reason: str = ""
    tls_ns: int | None = None  # TLS handshake complete (TLS listeners)
    request_log: list[RequestLogEntry] = field(default_factory=list)


@dataclass
class Counters:
    """Counters since start or the last reset."""

    since_ns: int
    requests: int = 0
    served: int = 0
    body_bytes: int = 0
    wire_bytes: int = 0
    misses: int = 0
    hsts_upgrades: int = 0  # https requests answered from an http recording
    browser_requests: int = 0  # a browser's own requests (favicon), answered 404, not misses
    bad_requests: int = 0
    connections_opened: int = 0
    connections_rejected: int = 0
    tls_failures: int = 0
    idle_timeouts: int = 0
    request_timeouts: int = 0
    peak_open: int = 0
    log_dropped: int = 0
    miss_log: list[dict[str, Any]] = field(default_factory=list)
    browser_log: list[dict[str, Any]] = field(default_factory=list)
    served_urls: dict[str, int] = field(default_factory=dict)  # recorded URL -> times served
    error_log: list[dict[str, Any]] = field(default_factory=list)
    closed: list[ConnectionRecord] = field(default_factory=list)


def connection_log(stats: Mapping[str, Any]) -> list[ConnectionRecord]:
    """The connections of a ``stats`` answer (its ``connection_log``), checked (``RecordError`` naming
    the field otherwise)."""
    entries = stats.get("connection_log")
    if not isinstance(entries, list):
        raise RecordError(f"replay server stats: connection_log={entries!r}: not a list")
    return [build(ConnectionRecord, entry, f"replay server stats, connection {i}") if isinstance(entry, dict)
            else _not_an_object(entry) for i, entry in enumerate(entries)]  # fmt: skip


def _not_an_object(entry: object) -> ConnectionRecord:
    raise RecordError(f"replay server stats: connection_log entry {entry!r} is not an object")


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

    def record_served(self, url: str, *, upgraded: bool = False) -> None:
        """Count a recorded answer sent for ``url`` (the recorded URL; ``upgraded``: asked over https)."""
        self.counters.served += 1
        self.counters.served_urls[url] = self.counters.served_urls.get(url, 0) + 1
        if upgraded:
            self.counters.hsts_upgrades += 1

    def record_browser_request(self, method: str, url: str, peer: str) -> None:
        """Count a browser's own request (``replay_index.BROWSER_INITIATED_PATHS``), not a page miss."""
        self.counters.browser_requests += 1
        entry = {"ns": time.monotonic_ns(), "method": method, "url": url, "peer": peer}
        self._append(self.counters.browser_log, entry)

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
            record.request_log = []

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
            "served_urls": dict(c.served_urls),
            "hsts_upgrades": c.hsts_upgrades,
            "browser_requests": c.browser_requests,
            "browser_log": list(c.browser_log),
            "bad_requests": c.bad_requests,
            "error_log": list(c.error_log),
            "connections": {
                "opened": c.connections_opened,
                "open": len(self.open),
                "peak_open": c.peak_open,
                "rejected": c.connections_rejected,
                "tls_failures": c.tls_failures,
                "idle_timeouts": c.idle_timeouts,
                "request_timeouts": c.request_timeouts,
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
