"""Which destinations the HAAP may connect to: the allow-list and the addresses it never reaches.

A relay that connects wherever a client's header says is an open proxy, and a proxy that can reach
itself can be made to loop (one header naming the proxy, nested fifty times, made it open fifty
connections to itself). ``DestinationPolicy.refusal`` returns why a destination is refused, or
None; in this order:

1. IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are judged as the IPv4 address they name, and
   addresses that embed an IPv4 address another box translates to (NAT64 ``64:ff9b::/96`` and
   ``64:ff9b:1::/48`` per RFC 6052, 6to4 ``2002::/16``, Teredo) must pass for that IPv4 address too.
2. Never, whatever the allow-list: unspecified and "this network" (``0.0.0.0/8``, ``::``; Linux
   connects those to the local host), multicast, the limited broadcast, link-local
   (``169.254.0.0/16`` with cloud metadata services, ``fe80::/10``) and reserved addresses.
3. Outside every allowed network: refused; the network and broadcast addresses of an allowed IPv4
   network too.
4. Loopback only when an allowed network lying inside loopback (``127.0.0.0/8``, ``::1/128``)
   contains it; any other address of the HAAP's own host only when a host entry (``/32``,
   ``/128``) names it. A catch-all never counts as explicit.
5. The HAAP's own listening ports on a local or loopback address: always refused (a loop).

``catch_all_warnings`` words the loud warning for an allow-list that lets everything through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
LOOPBACKS = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))


def normalise_network(network: Network) -> Network:
    """An IPv4-mapped IPv6 network (``::ffff:198.18.0.0/111``) as the IPv4 network it names."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(IPV4_MAPPED):
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def normalise_address(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it names."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def embedded_ipv4(address: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address a translator would reach for ``address`` (NAT64, 6to4, Teredo), and the kind."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    packed = address.packed
    if address in NAT64_WELL_KNOWN:
        return "NAT64", ipaddress.IPv4Address(packed[12:16])
    if address in NAT64_LOCAL_USE:  # RFC 6052 /48: 16 bits, the u octet (bits 64..71), 16 bits
        return "NAT64", ipaddress.IPv4Address(packed[6:8] + packed[9:11])
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address.teredo is not None:
        return "Teredo", address.teredo[1]
    return None


def is_local_address(address: IPAddress) -> bool:
    """Whether ``address`` belongs to this host (its network namespace): binding to it succeeds.

    Also true for addresses of local routes (``ip route add local ...``), which loop back the same
    way. With ``ip_nonlocal_bind`` set, every address binds: then everything counts as local and is
    refused unless named explicitly (the safe side).
    """
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return False
    with probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def _special(address: IPAddress) -> str | None:
    if address.is_unspecified or address in THIS_NETWORK:
        return "unspecified or 'this network' address (reaches the local host)"
    if address.is_multicast:
        return "multicast address"
    if address == LIMITED_BROADCAST:
        return "limited broadcast address"
    if address.is_link_local:
        return "link-local address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local address (deprecated)"
    translated = address in NAT64_WELL_KNOWN or address in NAT64_LOCAL_USE  # judged by what they name
    if address.is_reserved and not address.is_loopback and not translated:
        return "reserved address"
    return None


def catch_all_warnings(allow: Collection[Network]) -> list[str]:
    """Loud warnings for an allow-list that admits every destination of a family, or half of them
    or more (``0.0.0.0/1`` plus ``128.0.0.0/1`` is a catch-all too)."""
    warnings = []
    for version, bits in ((4, 32), (6, 128)):
        family = [n for n in allow if n.version == version]
        collapsed: list[Network] = list(ipaddress.collapse_addresses(family))  # type: ignore[type-var]
        covered = sum(n.num_addresses for n in collapsed)
        if covered >= 1 << (bits - 1):
            entries = " ".join(f"--allow {n}" for n in family)
            share = "every" if covered == 1 << bits else "at least half of all"
            warnings.append(f"WARNING: {entries} admits {share} IPv{version} destinations: this HAAP is an open "
                            "proxy to anyone who can reach it (no client authentication); name the networks it "
                            "should serve")  # fmt: skip
    return warnings


@dataclass
class DestinationPolicy:
    """The allow-list plus the rules above; ``own_ports`` are the HAAP's listening ports.

    ``is_local`` tells whether an address is the host's own (``is_local_address``: a real bind).
    """

    allow: tuple[Network, ...]
    own_ports: Collection[int] = ()
    is_local: Callable[[IPAddress], bool] = is_local_address
    _explicit_loopback: tuple[Network, ...] = field(init=False)
    _host_entries: frozenset[IPAddress] = field(init=False)

    def __post_init__(self) -> None:
        self.allow = tuple(normalise_network(n) for n in self.allow)
        self._explicit_loopback = tuple(n for n in self.allow if any(_inside(n, lo) for lo in LOOPBACKS))
        self._host_entries = frozenset(n.network_address for n in self.allow if n.prefixlen == n.max_prefixlen)

    def _allowed_network(self, address: IPAddress) -> Network | None:
        return next((n for n in self.allow if address in n), None)

    def refusal(self, address: IPAddress, port: int) -> str | None:
        """Why connecting to ``address:port`` is refused, or None when it is allowed."""
        address = normalise_address(address)
        reason = _special(address)
        if reason is not None:
            return f"destination {address}: {reason}"
        network = self._allowed_network(address)
        if network is None:
            allowed = ", ".join(str(n) for n in self.allow)
            return f"destination {address} outside the allowed networks ({allowed})"
        if (
            isinstance(network, ipaddress.IPv4Network)
            and network.prefixlen <= 30
            and address in (network.network_address, network.broadcast_address)
        ):
            return f"destination {address}: network or broadcast address of {network}"
        translated = embedded_ipv4(address)
        if translated is not None:
            kind, inner = translated
            inner_reason = self.refusal(inner, port)
            if inner_reason is not None:
                return f"destination {address}: {kind} address of {inner}, refused: {inner_reason}"
        loopback = address.is_loopback
        local = loopback or self.is_local(address)
        if local and port in self.own_ports:
            return f"destination {address}:{port}: the HAAP itself (a loop)"
        if loopback and not any(address in n for n in self._explicit_loopback):
            return (
                f"destination {address}: loopback, not explicitly allowed (allow a network inside 127.0.0.0/8 or ::1)"
            )
        if local and not loopback and address not in self._host_entries:
            return (f"destination {address}: an address of the HAAP's own host, not explicitly allowed "
                    f"(allow {address}/{address.max_prefixlen})")  # fmt: skip
        return None


def _inside(network: Network, outer: Network) -> bool:
    if isinstance(network, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return network.subnet_of(outer)
    if isinstance(network, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return network.subnet_of(outer)
    return False
