"""What a replayed page is: recorded exchanges per site, and the origin address of each host.

Both corpora (HAR files and Mahimahi protobuf recordings) load into these types; the origin
server, the DNS configuration and experiment 2 only see these.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# Emulated internet: origins get one address each from ORIGIN_NETWORK; infrastructure (router,
# DNS server, HAAP's internet side) uses INFRA_NETWORK. Both inside 198.18.0.0/15 (RFC 2544).
ORIGIN_NETWORK = ipaddress.IPv4Network("198.19.0.0/16")
INFRA_NETWORK = ipaddress.IPv4Network("198.18.0.0/16")


@dataclass(frozen=True)
class RecordedExchange:
    """One request a page load makes, and the answer the replay sends.

    ``headers`` are the recorded response headers minus hop-by-hop and framing ones
    (Content-Length, Transfer-Encoding, Connection, Keep-Alive): the server frames ``body``
    itself. ``body`` is what goes on the wire after de-chunking: still compressed when a
    Content-Encoding header says so.
    """

    scheme: str  # "http" or "https"
    host: str  # lower case, without port
    port: int
    method: str  # "GET" in practice
    target: str  # request target as sent: path and query
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    content_type: str  # media type without parameters, lower case ("" when unknown)
    # body generated, not the recorded one: the main document, inert HTML/CSS padding or filler bytes
    # of the recorded size (corpus/RULES.md)
    synthesized: bool = False

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.target}"


@dataclass(frozen=True)
class ExcludedObject:
    """A recorded request the replay leaves out, and why (documented rule, e.g. "script-initiated")."""

    url: str
    reason: str


@dataclass(frozen=True)
class Site:
    """One recorded page: what ``wget --page-requisites`` of ``main_url`` fetches, exactly."""

    name: str  # e.g. "google.com"
    corpus: str  # "har" or "mahimahi"
    source: str  # the recording it came from (file or folder, relative to the project)
    main_url: str  # the URL wget starts from; its exchange serves the generated main document
    exchanges: tuple[RecordedExchange, ...]
    excluded: tuple[ExcludedObject, ...] = field(default=())

    def hosts(self) -> list[str]:
        """Every origin host name of this page, sorted."""
        return sorted({e.host for e in self.exchanges})


def origin_addresses(hosts: list[str]) -> dict[str, str]:
    """One address per host name in ORIGIN_NETWORK, stable for a given set of names (sorted)."""
    names = sorted(set(hosts))
    usable = ORIGIN_NETWORK.num_addresses - 2
    if len(names) > usable:
        raise ValueError(f"{len(names)} origin hosts: more than the {usable} addresses of {ORIGIN_NETWORK}")
    return {name: str(ORIGIN_NETWORK.network_address + 1 + i) for i, name in enumerate(names)}
