"""Settings of the origin replay server (see ``webreplay.server``): the listeners, the resource
bounds (``ServerLimits``), the parsing of ``IP:PORT`` listener arguments, and the two errors the
server raises (``ReplayConfigError`` for a bad setting, ``ReplayControlError`` for a failed control
command); checks only, no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

#: TLS versions the server may be capped at (``--tls-max``).
TLS_VERSIONS = ("1.2", "1.3")


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
        request_timeout_s: a request (head and body) must arrive completely within this long of
            its first byte, however steadily it drips (slowloris); else ``408`` and a close.
        handshake_timeout_s: limit on a TLS handshake.
        max_connections: open connections; more are reset at once and counted as rejected.
        max_log_entries: length limit of each log in the stats (misses, errors, closed
            connections); counters keep counting past it.
    """

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    idle_timeout_s: float = 30.0
    request_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    max_connections: int = 1024
    max_log_entries: int = 100_000

    def __post_init__(self) -> None:
        _check_int("max_header_bytes", self.max_header_bytes, 256, 1 << 24)
        _check_int("max_body_bytes", self.max_body_bytes, 0, 1 << 32)
        _check_seconds("idle_timeout_s", self.idle_timeout_s, 0.01, 86400.0)
        _check_seconds("request_timeout_s", self.request_timeout_s, 0.01, 86400.0)
        _check_seconds("handshake_timeout_s", self.handshake_timeout_s, 0.01, 600.0)
        _check_int("max_connections", self.max_connections, 1, 1_000_000)
        _check_int("max_log_entries", self.max_log_entries, 1, 10_000_000)
