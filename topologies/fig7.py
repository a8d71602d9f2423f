"""The paper's Figure 7: hybrid access. A client with two access links to the Hybrid Access
Aggregation Point (HAAP), which relays to origin servers in an emulated internet.

::

    client a1 198.18.1.1 ═══ LTE (default, 40 ms) ═══ h-a1 198.18.1.254 ┐
    client a2 198.18.2.1 ═══ DSL/WiFi (20 ms) ═══════ h-a2 198.18.2.254 ├ haap h-i 198.18.4.1
                                                                          ║ internet leg (10 ms)
                       origins w1 198.18.5.1 + 198.19.0.0/16 ── r-w ── router r-h 198.18.4.254
                                             dns d1 198.18.6.1 ── r-d ──┘

The access links and the internet leg are emulated links (delay, loss, rate per direction); the
router reaches the origin host (which holds one address per recorded origin host name, from
``webreplay.model.ORIGIN_NETWORK``) and the DNS server over plain veths. The client's default route
is LTE (the paper's high-latency default path); policy routing sends each source address out of its
own link. The HAAP routes too (the client's DNS queries take the default path to the DNS server);
web traffic reaches it through the proxies. The origin host acknowledges without delay (route
``quickack``). Static neighbours, no IPv6, pinned congestion control,
no metrics cache and the MPTCP settings are as in Figure 3 (``topologies.fig3``).
"""

from __future__ import annotations

import ipaddress
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from mininet.link import Link
from mininet.topo import Topo

from topologies.fig3 import (
    Fig3Config,
    PathConfig,
    address_command,
    allow_congestion_control,
    client_routing_commands,
    mptcp_commands,
    neighbour_command,
    sysctl_commands,
)
from topologies.linkparams import LinkConfigError, _check_number
from topologies.links import BackendChoice, EmulatedLink, LinkError
from topologies.network import EmulatedNetwork

CLIENT_LTE = "198.18.1.1"
CLIENT_DSL = "198.18.2.1"
HAAP_LTE = "198.18.1.254"
HAAP_DSL = "198.18.2.254"
HAAP_INTERNET = "198.18.4.1"
ROUTER_HAAP = "198.18.4.254"
ROUTER_WEB = "198.18.5.254"
WEB = "198.18.5.1"
ROUTER_DNS = "198.18.6.254"
DNS = "198.18.6.1"
ORIGINS = "198.19.0.0/16"


@dataclass(frozen=True)
class Fig7Config:
    """Everything that defines a Figure 7 network.

    Attributes:
        lte: the default (initial) access path, path 1 (paper: RTT 40 ms, 10 Mbit/s).
        dsl: DSL over WiFi, path 2 (paper: RTT 20 ms, 10 Mbit/s).
        internet_rtt_ms: RTT of the HAAP's link into the emulated internet.
        internet_rate_mbit: its rate (None: unlimited).
        origin_addresses: addresses the origin host answers on (one per recorded host name).
        congestion_control, mptcp_subflows, tcp_syn_retries, tcp_syn_linear_timeouts, seed: as in
            ``topologies.fig3.Fig3Config``.
    """

    lte: PathConfig = field(default_factory=lambda: PathConfig(rtt_ms=40.0, rate_mbit=10.0))
    dsl: PathConfig = field(default_factory=lambda: PathConfig(rtt_ms=20.0, rate_mbit=10.0))
    internet_rtt_ms: float = 10.0
    internet_rate_mbit: float | None = None
    origin_addresses: tuple[str, ...] = ()
    congestion_control: str = "cubic"
    mptcp_subflows: int = 2
    tcp_syn_retries: int | None = None
    tcp_syn_linear_timeouts: int | None = 0
    seed: int = 1

    def __post_init__(self) -> None:
        _check_number("internet_rtt_ms", self.internet_rtt_ms, low=0.0, high=20_000.0)
        try:
            self.internet_leg().link_params()
        except LinkConfigError as err:
            raise LinkConfigError(f"internet: {err}") from None
        origins = ipaddress.IPv4Network(ORIGINS)
        for address in self.origin_addresses:
            try:
                ok = ipaddress.IPv4Address(address) in origins
            except ValueError:
                ok = False
            if not ok:
                raise LinkConfigError(f"origin_addresses: {address!r} is not an address in {ORIGINS}")
        # The shared knobs are checked by Figure 3's validation.
        self.fig3_equivalent()

    def internet_leg(self) -> PathConfig:
        """The HAAP-router link as a path (no loss)."""
        return PathConfig(rtt_ms=self.internet_rtt_ms, rate_mbit=self.internet_rate_mbit, queue_packets=1000)

    def fig3_equivalent(self) -> Fig3Config:
        """The same access paths and knobs as a Figure 3 config (validation and sysctls)."""
        return Fig3Config(path1=self.lte, path2=self.dsl, congestion_control=self.congestion_control,
                          mptcp_subflows=self.mptcp_subflows, tcp_syn_retries=self.tcp_syn_retries,
                          tcp_syn_linear_timeouts=self.tcp_syn_linear_timeouts, seed=self.seed)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for metadata (origin addresses as a count)."""
        values = asdict(self)
        values["origin_addresses"] = len(self.origin_addresses)
        return values


# ---------------------------------------------------------------------------------------------
# Command builders (pure).


def origin_address_batch(addresses: tuple[str, ...], interface: str = "lo") -> str:
    """``ip -batch`` input giving the origin host all its addresses (one ``ip`` process for hundreds)."""
    return "".join(f"addr add {address}/32 dev {interface}\n" for address in addresses)


# ---------------------------------------------------------------------------------------------
# The topology, Mininet style.


class Fig7Topo(Topo):  # type: ignore[misc]
    """Client, HAAP, internet router, origin host, DNS host."""

    def build(self, config: Fig7Config, names: dict[str, str], link_cls: type[EmulatedLink]) -> None:
        """Hosts without Mininet's default address; links with their emulation."""
        client, haap = self.addHost(names["client"], ip=None), self.addHost(names["haap"], ip=None)
        router, web = self.addHost(names["router"], ip=None), self.addHost(names["web"], ip=None)
        dns = self.addHost(names["dns"], ip=None)
        tag = names["tag"]
        # LTE, path 1 and the default route: client a1 <-> HAAP, shaped both ways.
        self.addLink(client, haap, intfName1="a1", intfName2="h-a1", cls=link_cls,
                     link_params=config.lte.link_params(), seed=config.seed + 1, tag=f"{tag}-p1")  # fmt: skip
        # DSL over WiFi, path 2: client a2 <-> HAAP, shaped both ways.
        self.addLink(client, haap, intfName1="a2", intfName2="h-a2", cls=link_cls,
                     link_params=config.dsl.link_params(), seed=config.seed + 2, tag=f"{tag}-p2")  # fmt: skip
        # Internet leg: HAAP <-> router, delay (and rate if set) both ways, no loss.
        self.addLink(haap, router, intfName1="h-i", intfName2="r-h", cls=link_cls,
                     link_params=config.internet_leg().link_params(), seed=config.seed + 3,
                     tag=f"{tag}-in")  # fmt: skip
        # Origin servers' LAN and the DNS server's LAN: plain veths, nothing emulated.
        self.addLink(router, web, intfName1="r-w", intfName2="w1", cls=Link)
        self.addLink(router, dns, intfName1="r-d", intfName2="d1", cls=Link)


class Fig7Network(EmulatedNetwork):
    """A running Figure 7 network; a context manager so that teardown always happens."""

    NAME = "Figure 7"
    ROLES = ("client", "haap", "router", "web", "dns")

    def __init__(self, config: Fig7Config, backend: BackendChoice | None = None) -> None:
        self.config = config
        super().__init__(backend)

    def topo(self, link_cls: type[EmulatedLink]) -> Topo:
        """Figure 7 with this network's config and names."""
        return Fig7Topo(config=self.config, names=self.names, link_cls=link_cls)

    def _configure(self) -> None:
        allow_congestion_control(self.config.congestion_control)
        fig3 = self.config.fig3_equivalent()
        client, haap, router, web, dns = (self.host(r) for r in ("client", "haap", "router", "web", "dns"))
        for host in (client, haap, router, web, dns):
            for argv in sysctl_commands(fig3, forwarding=host in (haap, router)):
                self._sh(host, argv)
        ends = [
            (client, CLIENT_LTE, "a1", haap, HAAP_LTE, "h-a1"),
            (client, CLIENT_DSL, "a2", haap, HAAP_DSL, "h-a2"),
            (haap, HAAP_INTERNET, "h-i", router, ROUTER_HAAP, "r-h"),
            (web, WEB, "w1", router, ROUTER_WEB, "r-w"),
            (dns, DNS, "d1", router, ROUTER_DNS, "r-d"),
        ]
        for host_a, addr_a, intf_a, host_b, addr_b, intf_b in ends:
            for host, address, intf in ((host_a, addr_a, intf_a), (host_b, addr_b, intf_b)):
                self._sh(host, ["ip", "link", "set", "dev", intf, "mtu", "1500", "up"])
                self._sh(host, address_command(address, intf))
        for host_a, addr_a, intf_a, host_b, addr_b, intf_b in ends:
            self._sh(host_a, neighbour_command(addr_b, self._mac(host_b, intf_b), intf_a))
            self._sh(host_b, neighbour_command(addr_a, self._mac(host_a, intf_a), intf_b))
        for argv in client_routing_commands((CLIENT_LTE, CLIENT_DSL), (HAAP_LTE, HAAP_DSL)):
            self._sh(client, argv)
        self._sh(haap, ["ip", "route", "add", "default", "via", ROUTER_HAAP, "dev", "h-i"])
        for subnet in ("198.18.1.0/24", "198.18.2.0/24"):
            self._sh(router, ["ip", "route", "add", subnet, "via", HAAP_INTERNET, "dev", "r-h"])
        self._sh(router, ["ip", "route", "add", ORIGINS, "via", WEB, "dev", "r-w"])
        # quickack: the origins acknowledge at once. wget writes small TLS records with Nagle's
        # algorithm on, so a delayed ACK here (up to 40 ms) would hold its next record (see README,
        # "Why our Figure 9 differs from the paper"); wget's own MPTCP socket (mptcpize) never waits.
        self._sh(web, ["ip", "route", "add", "default", "via", ROUTER_WEB, "dev", "w1", "quickack", "1"])
        self._sh(dns, ["ip", "route", "add", "default", "via", ROUTER_DNS, "dev", "d1"])
        if self.config.origin_addresses:
            self._sh(web, ["ip", "-batch", "-"], input_text=origin_address_batch(self.config.origin_addresses))
        for argv in mptcp_commands(self.config.mptcp_subflows, client=True, sources=(CLIENT_LTE, CLIENT_DSL)):
            self._sh(client, argv)
        for argv in mptcp_commands(self.config.mptcp_subflows, client=False):
            self._sh(haap, argv)

    def host(self, role: str) -> Any:
        """The Mininet host of ``role``: client, haap, router, web or dns."""
        if role not in ("client", "haap", "router", "web", "dns"):
            raise LinkConfigError(f"role={role!r}: must be client, haap, router, web or dns")
        return self.net.get(self.names[role])

    def links(self) -> dict[str, EmulatedLink]:
        """The emulated links by name: lte, dsl, internet."""
        wanted = {"a1": "lte", "a2": "dsl", "h-i": "internet"}
        found = {wanted[link.intf1.name]: link for link in self.net.links
                 if isinstance(link, EmulatedLink) and link.intf1.name in wanted}  # fmt: skip
        if len(found) != len(wanted):
            raise LinkError(f"Figure 7: emulated links missing: {sorted(set(wanted.values()) - set(found))}")
        return found

    def set_path(self, path: int, config: PathConfig) -> None:
        """Change access path 1 (LTE) or 2 (DSL) at run time (no rebuild), as Figure 3's ``set_path``."""
        if path not in (1, 2):
            raise LinkConfigError(f"path={path!r}: must be 1 (LTE) or 2 (DSL)")
        self.links()["lte" if path == 1 else "dsl"].set_params(config.link_params())

    def check_links(self) -> None:
        """Raise LinkError unless every emulated link is in place."""
        for link in self.links().values():
            link.check()

    def sh(self, role: str, argv: list[str], input_text: str | None = None) -> str:
        """Run a command in a host's namespace (checked; CommandError names it and its stderr)."""
        return self._sh(self.host(role), argv, input_text)

    def describe(self) -> dict[str, Any]:
        """Metadata: backend, config, links, the client's sysctls and MPTCP endpoints, kernel."""
        keys = ["net.ipv4.tcp_congestion_control", "net.mptcp.enabled", "net.ipv4.tcp_syn_retries",
                "net.ipv4.tcp_syn_linear_timeouts"]  # fmt: skip
        out = self._sh(self.host("client"), ["sysctl", "-e", *keys])
        return {
            "topology": "fig7",
            "link_backend": self.backend.to_dict(),
            "config": self.config.to_dict(),
            "links": {name: link.describe() for name, link in self.links().items()},
            "client_sysctls": dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line),
            "mptcp_endpoints": self._sh(self.host("client"), ["ip", "mptcp", "endpoint", "show"]).strip(),
            "kernel": platform.release(),
        }
