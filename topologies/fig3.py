"""The paper's Figure 3: client (Host A) with interfaces A1 and A2, two paths, server (Host B) with B1.

::

    client a1 198.18.1.1 ═══ path 1 (default) ═══ r-a1 198.18.1.254 ┐
    client a2 198.18.2.1 ═══ path 2 ═════════════ r-a2 198.18.2.254 ├ router ── b1 198.18.3.1 server

The two paths are independent emulated links (delay, loss, rate per direction); the router joins
them to the server's single interface over a plain veth, which adds no emulation. The client's
default route is path 1; policy routing sends each source address out of its own interface, so a
socket bound to A2's address uses path 2. Neighbour entries are static (the first packet does not
wait for ARP across a delayed link), IPv6 is off (no router solicitations or MLD on the links),
congestion control is pinned per namespace (this machine's default is bbr), TCP metrics are not
cached between connections, and MPTCP is set per namespace: path manager endpoints for A1 and A2,
limits on both ends, and ``blackhole_timeout=0`` (otherwise a SYN-loss run switches MPTCP off for
an hour).
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mininet.link import Link
from mininet.topo import Topo

from topologies.linkparams import LinkConfigError, LinkParams, _check_number
from topologies.links import BackendChoice, EmulatedLink, LinkError
from topologies.network import EmulatedNetwork
from topologies.shell import run

LossDirection = Literal["up", "down", "both"]

CLIENT_A1 = "198.18.1.1"
CLIENT_A2 = "198.18.2.1"
ROUTER_A1 = "198.18.1.254"
ROUTER_A2 = "198.18.2.254"
ROUTER_B1 = "198.18.3.254"
SERVER_B1 = "198.18.3.1"
PREFIX_LEN = 24

#: Policy routing table per client source address (path number -> table).
PATH_TABLES = {1: 101, 2: 102}


@dataclass(frozen=True)
class PathConfig:
    """One client path: round-trip time it adds, rate, loss and where the loss applies.

    Attributes:
        rtt_ms: round-trip time of the path (half of it each way).
        rate_mbit: rate in both directions (None: unlimited).
        loss_pct: random loss in percent.
        loss_direction: ``up`` (client egress, as the paper's ``tc`` on the client), ``down``
            (towards the client) or ``both``.
        queue_packets: drop-tail queue of the rate limiter, per direction.
    """

    rtt_ms: float = 20.0
    rate_mbit: float | None = 10.0
    loss_pct: float = 0.0
    loss_direction: LossDirection = "up"
    queue_packets: int = 100

    def link_params(self) -> LinkParams:
        """LinkParams with the client as end ``a``."""
        return LinkParams.for_rtt(
            rtt_ms=self.rtt_ms,
            rate_mbit=self.rate_mbit,
            loss_pct=self.loss_pct,
            loss_direction=self.loss_direction,
            queue_packets=self.queue_packets,
        )


@dataclass(frozen=True)
class Fig3Config:
    """Everything that defines a Figure 3 network.

    Attributes:
        path1, path2: the two client paths; path 1 carries the default route.
        congestion_control: TCP congestion control in every namespace.
        mptcp_subflows: ``ip mptcp limits`` subflows/add_addr_accepted on both ends.
        syn_retrans_before_tcp_fallback: MPTCP SYN retransmissions before a plain-TCP SYN
            (None keeps the kernel's default).
        tcp_syn_retries: SYN retransmissions before connect() gives up (None keeps the kernel's
            default, 6: about 127 s).
        tcp_syn_linear_timeouts: SYN retransmissions sent at a constant 1 s before exponential
            back-off starts (Linux >= 6.18, default 4; 0 gives the classic 1, 2, 4, ... s back-off
            of the paper's kernel). None keeps the kernel's default; ignored by kernels without it.
        seed: seeds the emulators' loss generators (path n uses seed + n).
    """

    path1: PathConfig = field(default_factory=PathConfig)
    path2: PathConfig = field(default_factory=PathConfig)
    congestion_control: str = "cubic"
    mptcp_subflows: int = 2
    syn_retrans_before_tcp_fallback: int | None = None
    tcp_syn_retries: int | None = None
    tcp_syn_linear_timeouts: int | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("path1", "path2"):
            path = getattr(self, name)
            _check_number(f"{name}.rtt_ms", path.rtt_ms, low=0.0, high=20_000.0)
            if path.loss_direction not in ("up", "down", "both"):
                raise LinkConfigError(f"{name}.loss_direction={path.loss_direction!r}: must be up/down/both")
            try:
                path.link_params()
            except LinkConfigError as err:
                raise LinkConfigError(f"{name}.{err}") from None
        if not self.congestion_control.isidentifier():
            raise LinkConfigError(f"congestion_control={self.congestion_control!r}: not a valid name")
        if self.tcp_syn_retries is not None and not 1 <= self.tcp_syn_retries <= 127:
            raise LinkConfigError(f"tcp_syn_retries={self.tcp_syn_retries!r}: must be 1..127")
        if self.tcp_syn_linear_timeouts is not None and not 0 <= self.tcp_syn_linear_timeouts <= 100:
            raise LinkConfigError(f"tcp_syn_linear_timeouts={self.tcp_syn_linear_timeouts!r}: must be 0..100")
        if not 1 <= self.mptcp_subflows <= 8:
            raise LinkConfigError(f"mptcp_subflows={self.mptcp_subflows!r}: must be 1..8")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for metadata."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Command builders (pure): what each namespace is told.


def sysctl_commands(config: Fig3Config, *, forwarding: bool = False) -> list[list[str]]:
    """Per-namespace sysctls: congestion control, no metrics cache, no IPv6, MPTCP knobs."""
    settings = {
        "net.ipv4.tcp_congestion_control": config.congestion_control,
        "net.ipv4.tcp_no_metrics_save": "1",
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
        "net.mptcp.enabled": "1",
        "net.mptcp.blackhole_timeout": "0",
        "net.ipv4.ip_forward": "1" if forwarding else "0",
    }
    if config.syn_retrans_before_tcp_fallback is not None:
        settings["net.mptcp.syn_retrans_before_tcp_fallback"] = str(config.syn_retrans_before_tcp_fallback)
    if config.tcp_syn_retries is not None:
        settings["net.ipv4.tcp_syn_retries"] = str(config.tcp_syn_retries)
    if config.tcp_syn_linear_timeouts is not None and kernel_has_sysctl("net.ipv4.tcp_syn_linear_timeouts"):
        settings["net.ipv4.tcp_syn_linear_timeouts"] = str(config.tcp_syn_linear_timeouts)
    return [["sysctl", "-qw", f"{key}={value}"] for key, value in settings.items()]


def kernel_has_sysctl(name: str) -> bool:
    """Whether this kernel knows sysctl ``name`` (read in the caller's namespace)."""
    return Path("/proc/sys", *name.split(".")).exists()


def address_command(address: str, interface: str) -> list[str]:
    """Assign ``address``/24 to ``interface``."""
    return ["ip", "addr", "add", f"{address}/{PREFIX_LEN}", "dev", interface]


def neighbour_command(address: str, mac: str, interface: str) -> list[str]:
    """Permanent neighbour entry, so no ARP exchange crosses the emulated link."""
    return ["ip", "neigh", "replace", address, "lladdr", mac, "dev", interface, "nud", "permanent"]


def client_routing_commands(
    sources: tuple[str, str] = (CLIENT_A1, CLIENT_A2), gateways: tuple[str, str] = (ROUTER_A1, ROUTER_A2)
) -> list[list[str]]:
    """Default route via path 1; each source address routed out of its own interface (a1, a2)."""
    commands = [["ip", "route", "add", "default", "via", gateways[0], "dev", "a1"]]
    for path, (source, gateway) in enumerate(zip(sources, gateways, strict=True), start=1):
        table = str(PATH_TABLES[path])
        commands += [
            ["ip", "route", "add", "default", "via", gateway, "dev", f"a{path}", "table", table],
            ["ip", "rule", "add", "from", source, "table", table],
        ]
    return commands


def mptcp_commands(
    subflows: int, *, client: bool, sources: tuple[str, str] = (CLIENT_A1, CLIENT_A2)
) -> list[list[str]]:
    """Path manager limits (both ends) and, on the client, a ``subflow`` endpoint per interface."""
    limit = str(subflows)
    commands = [
        ["ip", "mptcp", "endpoint", "flush"],
        ["ip", "mptcp", "limits", "set", "subflow", limit, "add_addr_accepted", limit],
    ]
    if client:
        commands += [["ip", "mptcp", "endpoint", "add", source, "dev", f"a{path}", "id", str(path), "subflow"]
                     for path, source in enumerate(sources, start=1)]  # fmt: skip
    return commands


def allow_congestion_control(name: str) -> None:
    """Let namespaces other than the initial one choose ``name`` as their default.

    The kernel refuses (EPERM) a namespace default that is not in the initial namespace's
    ``tcp_allowed_congestion_control``; adding it there allows it without changing anyone's default.
    """
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    if name not in available:
        raise LinkConfigError(f"congestion_control={name!r}: not available on this kernel ({' '.join(available)})")
    allowed_file = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
    allowed = allowed_file.read_text().split()
    if name not in allowed:
        run(["sysctl", "-qw", f"net.ipv4.tcp_allowed_congestion_control={' '.join([*allowed, name])}"])


# ---------------------------------------------------------------------------------------------
# The topology, Mininet style.


class Fig3Topo(Topo):  # type: ignore[misc]
    """Client, router and server; path 1 and path 2 are emulated links, the server LAN a veth."""

    def build(self, config: Fig3Config, names: dict[str, str], link_cls: type[EmulatedLink]) -> None:
        """Hosts without Mininet's default 10/8 address; links with their emulation."""
        client = self.addHost(names["client"], ip=None)
        router = self.addHost(names["router"], ip=None)
        server = self.addHost(names["server"], ip=None)
        tag = names["tag"]
        # Path 1, the default route: client A1 <-> router, shaped both ways (loss where configured).
        self.addLink(client, router, intfName1="a1", intfName2="r-a1", cls=link_cls,
                     link_params=config.path1.link_params(), seed=config.seed + 1,
                     tag=f"{tag}-p1")  # fmt: skip
        # Path 2: client A2 <-> router, shaped both ways.
        self.addLink(client, router, intfName1="a2", intfName2="r-a2", cls=link_cls,
                     link_params=config.path2.link_params(), seed=config.seed + 2,
                     tag=f"{tag}-p2")  # fmt: skip
        # Server LAN: router <-> server B1, a plain veth: no delay, loss or rate of its own.
        self.addLink(router, server, intfName1="r-b1", intfName2="b1", cls=Link)


class Fig3Network(EmulatedNetwork):
    """A running Figure 3 network; use as a context manager so teardown always happens.

    ``with Fig3Network(Fig3Config()) as net: net.client.popen(...)``. Teardown stops tracked
    processes, every other process left in our hosts' namespaces, the links (emulators) and hosts.
    """

    NAME = "Figure 3"
    ROLES = ("client", "router", "server")

    def __init__(self, config: Fig3Config, backend: BackendChoice | None = None) -> None:
        self.config = config
        super().__init__(backend)

    def topo(self, link_cls: type[EmulatedLink]) -> Topo:
        """Figure 3 with this network's config and names."""
        return Fig3Topo(config=self.config, names=self.names, link_cls=link_cls)

    def _configure(self) -> None:
        allow_congestion_control(self.config.congestion_control)
        client, router, server = self.client, self.router, self.server
        for host in (client, router, server):
            for argv in sysctl_commands(self.config, forwarding=host is router):
                self._sh(host, argv)
        for host, address, intf in (
            (client, CLIENT_A1, "a1"), (client, CLIENT_A2, "a2"), (router, ROUTER_A1, "r-a1"),
            (router, ROUTER_A2, "r-a2"), (router, ROUTER_B1, "r-b1"), (server, SERVER_B1, "b1"),
        ):  # fmt: skip
            self._sh(host, ["ip", "link", "set", "dev", intf, "mtu", "1500", "up"])
            self._sh(host, address_command(address, intf))
        for argv in client_routing_commands():
            self._sh(client, argv)
        self._sh(server, ["ip", "route", "add", "default", "via", ROUTER_B1, "dev", "b1"])
        ends = (
            (client, "a1"),
            (client, "a2"),
            (router, "r-a1"),
            (router, "r-a2"),
            (router, "r-b1"),
            (server, "b1"),
        )
        macs = {(h.name, i): self._mac(h, i) for h, i in ends}
        for host, intf, peer_ip, peer_host, peer_intf in (
            (client, "a1", ROUTER_A1, router, "r-a1"), (router, "r-a1", CLIENT_A1, client, "a1"),
            (client, "a2", ROUTER_A2, router, "r-a2"), (router, "r-a2", CLIENT_A2, client, "a2"),
            (router, "r-b1", SERVER_B1, server, "b1"), (server, "b1", ROUTER_B1, router, "r-b1"),
        ):  # fmt: skip
            self._sh(host, neighbour_command(peer_ip, macs[(peer_host.name, peer_intf)], intf))
        for argv in mptcp_commands(self.config.mptcp_subflows, client=True):
            self._sh(client, argv)
        for argv in mptcp_commands(self.config.mptcp_subflows, client=False):
            self._sh(server, argv)

    # -- access ---------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """Host A (Mininet host)."""
        return self.net.get(self.names["client"])

    @property
    def router(self) -> Any:
        """The router joining both paths to the server LAN."""
        return self.net.get(self.names["router"])

    @property
    def server(self) -> Any:
        """Host B."""
        return self.net.get(self.names["server"])

    def path_link(self, path: int) -> EmulatedLink:
        """The emulated link of path 1 or 2."""
        if path not in (1, 2):
            raise LinkConfigError(f"path={path!r}: must be 1 or 2")
        wanted = f"a{path}"
        for link in self.net.links:
            if isinstance(link, EmulatedLink) and link.intf1.name == wanted:
                return link
        raise LinkError(f"path {path}: no emulated link found")

    def set_path(self, path: int, config: PathConfig) -> None:
        """Change a path's parameters at run time (no rebuild)."""
        self.path_link(path).set_params(config.link_params())

    def check_links(self) -> None:
        """Raise LinkError unless both paths' emulation is in place."""
        for path in (1, 2):
            self.path_link(path).check()

    def describe(self) -> dict[str, Any]:
        """Metadata: backend choice, config, links, sysctls as read back, kernel."""
        sysctls = {}
        for role in ("client", "server"):
            host = getattr(self, role)
            out = self._sh(host, ["sysctl", "-e", "net.ipv4.tcp_congestion_control", "net.mptcp.enabled",
                                  "net.mptcp.blackhole_timeout", "net.mptcp.syn_retrans_before_tcp_fallback",
                                  "net.ipv4.tcp_syn_retries", "net.ipv4.tcp_syn_linear_timeouts",
                                  "net.ipv4.tcp_retries2", "net.ipv4.tcp_no_metrics_save"])  # fmt: skip
            sysctls[role] = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
        return {
            "topology": "fig3",
            "link_backend": self.backend.to_dict(),
            "config": self.config.to_dict(),
            "links": [self.path_link(p).describe() for p in (1, 2)],
            "sysctls": sysctls,
            "mptcp_endpoints": self._sh(self.client, ["ip", "mptcp", "endpoint", "show"]).strip(),
            "kernel": platform.release(),
        }
