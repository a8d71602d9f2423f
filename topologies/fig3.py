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

import json
import os
import platform
import signal
import subprocess
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

from mininet.link import Link
from mininet.net import Mininet
from mininet.node import Host
from mininet.topo import Topo

from topologies.cleanup import netns_inode, processes_in_netns, terminate
from topologies.linkparams import LinkConfigError, LinkParams, _check_number
from topologies.links import PREFIX, BackendChoice, EmulatedLink, LinkError, choose_backend, link_class
from topologies.shell import in_netns, run

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


def client_routing_commands() -> list[list[str]]:
    """Default route via path 1; each source address routed out of its own interface."""
    return [
        ["ip", "route", "add", "default", "via", ROUTER_A1, "dev", "a1"],
        ["ip", "route", "add", "default", "via", ROUTER_A1, "dev", "a1", "table", str(PATH_TABLES[1])],
        ["ip", "rule", "add", "from", CLIENT_A1, "table", str(PATH_TABLES[1])],
        ["ip", "route", "add", "default", "via", ROUTER_A2, "dev", "a2", "table", str(PATH_TABLES[2])],
        ["ip", "rule", "add", "from", CLIENT_A2, "table", str(PATH_TABLES[2])],
    ]


def mptcp_commands(config: Fig3Config, *, client: bool) -> list[list[str]]:
    """Path manager limits (both ends) and, on the client, a ``subflow`` endpoint per interface."""
    limit = str(config.mptcp_subflows)
    commands = [
        ["ip", "mptcp", "endpoint", "flush"],
        ["ip", "mptcp", "limits", "set", "subflow", limit, "add_addr_accepted", limit],
    ]
    if client:
        commands += [
            ["ip", "mptcp", "endpoint", "add", CLIENT_A1, "dev", "a1", "id", "1", "subflow"],
            ["ip", "mptcp", "endpoint", "add", CLIENT_A2, "dev", "a2", "id", "2", "subflow"],
        ]
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


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _unwind_on_termination() -> dict[int, Any]:
    """Make SIGTERM/SIGHUP unwind like Ctrl-C (Python's default kills without running teardown).

    Only where nobody installed a handler already, and only in the main thread (where Python
    delivers signals). Returns the handlers to restore.
    """
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _raise_interrupt)
    return previous


class Fig3Network:
    """A running Figure 3 network; use as a context manager so teardown always happens.

    ``with Fig3Network(Fig3Config()) as net: net.client.popen(...)``. Teardown stops tracked
    processes, every other process left in our hosts' namespaces, the links (emulators) and hosts.
    """

    def __init__(self, config: Fig3Config, backend: BackendChoice | None = None) -> None:
        if os.geteuid() != 0:
            raise PermissionError("building a Figure 3 network needs root (network namespaces)")
        self.config = config
        self.backend = backend if backend is not None else choose_backend()
        self.run_tag = f"{PREFIX}{uuid.uuid4().hex[:6]}"
        self.names = {
            "tag": self.run_tag,
            "client": f"{self.run_tag}-client",
            "router": f"{self.run_tag}-router",
            "server": f"{self.run_tag}-server",
        }
        self._processes: list[subprocess.Popen[Any]] = []
        self.net: Any = None
        self._previous_handlers = _unwind_on_termination()
        try:
            self._build()
        except BaseException:
            self.stop()
            raise

    # -- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        topo = Fig3Topo(config=self.config, names=self.names, link_cls=link_class(self.backend.backend))
        self.net = Mininet(topo=topo, controller=None, host=Host, link=Link, build=False, cleanup=False)
        self.net.build()
        self._configure()
        self.check_links()

    def _sh(self, host: Any, argv: list[str]) -> str:
        return run(in_netns(host.pid, argv)).stdout

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
        for argv in mptcp_commands(self.config, client=True):
            self._sh(client, argv)
        for argv in mptcp_commands(self.config, client=False):
            self._sh(server, argv)

    def _mac(self, host: Any, intf: str) -> str:
        info = json.loads(self._sh(host, ["ip", "-j", "link", "show", "dev", intf]))
        return str(info[0]["address"])

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

    def popen(self, host: Any, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside ``host``'s namespace; it is stopped at teardown."""
        proc: subprocess.Popen[Any] = host.popen(argv, **kwargs)
        # Forget finished ones: a sweep starts thousands of short processes.
        self._processes = [p for p in self._processes if p.poll() is None]
        self._processes.append(proc)
        return proc

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

    # -- teardown -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this network started; safe to call twice and after a failed build."""
        for proc in self._processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._processes:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        self._processes.clear()
        if self.net is not None:
            self._kill_strays()
            net, self.net = self.net, None
            net.stop()
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _kill_strays(self) -> None:
        """Anything else still inside our hosts' namespaces (it would keep them alive)."""
        shells = {host.pid for host in self.net.hosts}
        inodes = {inode for inode in map(netns_inode, shells) if inode is not None}
        terminate(processes_in_netns(inodes, exclude=shells), grace_s=1.0)

    def __enter__(self) -> Fig3Network:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
