"""The client's DNS stub for experiment 2: every lookup logged with one clock, and a local cache mode.

``python -m webreplay.dnsrelay --listen 127.0.0.1 --upstream 198.18.6.1 --log FILE [--cache HOSTS]``
runs in the client's namespace as the resolver of wget's private resolv.conf. Each query is
appended to the log as one JSON line (``t_ns`` when the query arrived and ``answer_ns`` when the
answer left, ``time.monotonic_ns()``, the clock of the proxies' connection logs; ``name``,
``qtype``, ``rcode``, ``cached``: a ``Lookup``, read back with ``read_lookups``), so a page load's
timeline shows every DNS lookup.

* forward (default): the query goes unchanged (ID rewritten) to the upstream server, over the
  client's default path as a stub resolver's would, and the answer comes back unchanged;
* ``--cache HOSTS``: answered at once from the hosts file (``ADDRESS NAME`` lines, as dnsmasq
  reads): A records for known names, no data for other types, NXDOMAIN for unknown names; nothing
  leaves the client (a warm local cache).

Pure parts (``parse_query``, ``local_answer``, ``rewrite_id``) are unit-tested; prints ``READY``
once listening; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from robe_lab.cliparse import command_parser
from robe_lab.records import Record, RecordKinds, read_appended

QTYPE_A = 1
RCODE_NXDOMAIN = 3
UPSTREAM_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Lookup(Record):
    """One line of the log: a query that arrived at ``t_ns`` and was answered at ``answer_ns``
    (``rcode`` None when the upstream server never answered; ``cached``: answered from the hosts file)."""

    EVENT = "lookup"
    t_ns: int
    answer_ns: int
    name: str
    qtype: int
    rcode: int | None
    cached: bool


LOOKUPS: RecordKinds[Lookup] = RecordKinds("DNS stub log", [Lookup])


def read_lookups(path: Path, offset: int) -> tuple[list[Lookup], int]:
    """The lookups appended to the log at ``path`` since byte ``offset``, and the new offset."""
    lines, end = read_appended(path, offset)
    return [LOOKUPS.parse({"event": "lookup", **line}, str(path)) for line in lines], end


class DnsError(ValueError):
    """A datagram that is not a DNS query we can answer."""


@dataclass(frozen=True)
class Query:
    """The parts of a DNS query the relay needs."""

    ident: int
    name: str  # lower case, no trailing dot
    qtype: int
    question_end: int  # offset after the question section


def parse_query(data: bytes) -> Query:
    """The ID and first question of a DNS message (DnsError when malformed)."""
    if len(data) < 12:
        raise DnsError(f"{len(data)} bytes: shorter than a DNS header")
    ident, _flags, qdcount = struct.unpack_from("!HHH", data)
    if qdcount < 1:
        raise DnsError("no question")
    labels, offset = [], 12
    while True:
        if offset >= len(data):
            raise DnsError("question name runs past the end")
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length > 63:
            raise DnsError(f"label length {length}: compression or garbage in a question")
        labels.append(data[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
    if offset + 4 > len(data):
        raise DnsError("question type and class missing")
    qtype = struct.unpack_from("!H", data, offset)[0]
    return Query(ident, ".".join(labels), qtype, offset + 4)


def rewrite_id(message: bytes, ident: int) -> bytes:
    """``message`` with its 16-bit ID replaced."""
    return struct.pack("!H", ident) + message[2:]


def local_answer(query_bytes: bytes, query: Query, hosts: dict[str, str], ttl: int = 0) -> tuple[bytes, int]:
    """A response from ``hosts`` (name -> IPv4 address): A record, NODATA, or NXDOMAIN; and its rcode."""
    flags = struct.unpack_from("!H", query_bytes, 2)[0]
    address = hosts.get(query.name)
    rcode = 0 if address is not None else RCODE_NXDOMAIN
    answers = b""
    if address is not None and query.qtype == QTYPE_A:
        # Name as a pointer to the question (offset 12), type A, class IN, TTL, 4 bytes of address.
        answers = struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, ttl, 4) + ipaddress.IPv4Address(address).packed
    # QR=1, opcode and RD from the query, RA=1, rcode.
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode
    header = struct.pack("!HHHHHH", query.ident, out_flags, 1, 1 if answers else 0, 0, 0)
    return header + query_bytes[12 : query.question_end] + answers, rcode


def read_hosts(path: Path) -> dict[str, str]:
    """``ADDRESS NAME`` lines -> {name: address}."""
    hosts = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.lstrip().startswith("#"):
            for name in parts[1:]:
                hosts[name.lower().rstrip(".")] = parts[0]
    return hosts


class Relay(asyncio.DatagramProtocol):
    """Answers queries on the listening socket, forwarding or from the local hosts table."""

    def __init__(self, upstream: tuple[str, int], hosts: dict[str, str] | None, log: IO[str] | None) -> None:
        self.upstream = upstream
        self.hosts = hosts
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None
        self.up: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[Any, int, Query, int]] = {}  # relay id -> (client, id, query, t_ns)
        self.next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def _log(self, query: Query, t_ns: int, rcode: int | None, cached: bool) -> None:
        if self.log is not None:
            lookup = Lookup(t_ns, time.monotonic_ns(), query.name, query.qtype, rcode, cached)
            self.log.write(lookup.to_line() + "\n")
            self.log.flush()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        t_ns = time.monotonic_ns()
        try:
            query = parse_query(data)
        except DnsError:
            return
        assert self.transport is not None
        if self.hosts is not None:
            answer, rcode = local_answer(data, query, self.hosts)
            self.transport.sendto(answer, addr)
            self._log(query, t_ns, rcode, True)
            return
        relay_id = self.next_id
        self.next_id = self.next_id % 65535 + 1
        self.pending[relay_id] = (addr, query.ident, query, t_ns)
        assert self.up is not None
        self.up.sendto(rewrite_id(data, relay_id))
        asyncio.get_running_loop().call_later(UPSTREAM_TIMEOUT_S, self.pending.pop, relay_id, None)

    def upstream_answer(self, data: bytes) -> None:
        """An answer from upstream: back to the client that asked, with its ID."""
        if len(data) < 12:
            return
        relay_id = struct.unpack_from("!H", data)[0]
        entry = self.pending.pop(relay_id, None)
        if entry is None or self.transport is None:
            return
        addr, ident, query, t_ns = entry
        self.transport.sendto(rewrite_id(data, ident), addr)
        self._log(query, t_ns, struct.unpack_from("!H", data, 2)[0] & 0xF, False)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay.upstream_answer(data)


async def serve(listen: str, port: int, upstream: str, hosts: dict[str, str] | None, log: IO[str] | None,
                upstream_port: int = 53) -> None:  # fmt: skip
    """Run until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    relay = Relay((upstream, upstream_port), hosts, log)
    transport, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=(listen, port),
                                                       family=socket.AF_INET)  # fmt: skip
    up, _ = await loop.create_datagram_endpoint(lambda: _Upstream(relay), remote_addr=(upstream, upstream_port),
                                                family=socket.AF_INET)  # fmt: skip
    relay.up = up
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("READY", flush=True)
    try:
        await stop.wait()
    finally:
        transport.close()
        up.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m webreplay.dnsrelay``."""
    parser = command_parser("webreplay.dnsrelay", __doc__)
    parser.add_argument("--listen", default="127.0.0.1", help="address to answer on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--upstream", required=True, help="the DNS server queries go to (forward mode)")
    parser.add_argument("--upstream-port", type=int, default=53)
    parser.add_argument("--cache", type=Path, default=None, help="answer locally from this hosts file")
    parser.add_argument("--log", default=None, help="JSON-lines query log (appended)")
    args = parser.parse_args(argv)
    try:
        ipaddress.ip_address(args.upstream)
    except ValueError:
        parser.error(f"--upstream={args.upstream!r}: not an IP address")
    hosts = read_hosts(args.cache) if args.cache is not None else None
    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    try:
        asyncio.run(serve(args.listen, args.port, args.upstream, hosts, log, args.upstream_port))
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
