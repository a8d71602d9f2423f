"""The strategy registry: every connection-establishment strategy of robe-lab, once.

Each strategy is data: its name, whether it runs on kernel sockets or on the userspace transport,
a description, what it needs from the peer, how its set-up time relates to the paths (what the
reports' expectations use), its plot style, and for the race (``robe.race``) which socket protocol
it uses and when it starts an attempt on each path. Profiles, the ``robe`` command line and agent,
the experiment 2 proxies, the transport validation and the reports read this table; adding a
strategy means adding it here (and its behaviour in ``robe.race``/``robe.selection`` or
``robe.protocol.connection``), nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Protocol(enum.StrEnum):
    """Socket protocol of every attempt (the userspace transport's subflows are TCP)."""

    TCP = "tcp"
    MPTCP = "mptcp"


class Kind(enum.StrEnum):
    """Where the strategy runs."""

    KERNEL = "kernel"  # kernel TCP/MPTCP sockets (robe.client, robe.proxy.aio_connect; server: robe serve)
    USERSPACE = "userspace"  # the userspace transport (robe.protocol; server: robe serve-user)


class SetupPath(enum.StrEnum):
    """Which path's RTT a loss-free set-up takes (the reports' 1.5 x RTT expectation)."""

    DEFAULT = "default"  # the default path (tcp, mptcp, mptcp-user)
    FASTEST = "fastest"  # every path at once: the fastest wins (SIM, downgrade, bbm, eSIM)
    TIMER = "timer"  # the default path, the next after the timer (TIMER)
    SELECTED = "selected"  # the path the history selects (IPS): depends on earlier connections


class Peer(enum.StrEnum):
    """What the strategy needs from the server."""

    ANY_TCP = "any TCP server"
    MPTCP = "an MPTCP server for multipath (plain TCP servers work: the kernel falls back)"
    USERSPACE = "a robe serve-user peer (the userspace transport)"


#: seaborn's ``colorblind`` palette (Okabe-Ito-like), by index: blue, orange, green, vermilion,
#: purple, brown, pink, grey, yellow, sky blue. Figures use only these colours (``analysis.style``).
COLOURBLIND = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
               "#56b4e9")  # fmt: skip
#: The hatch of the RobE_IPS variants: their base strategy's colour (what they do once the history
#: knows nothing), told apart by this hatch and their own marker.
IPS_HATCH = "xxxx"


@dataclass(frozen=True)
class PlotStyle:
    """How figures draw the strategy (``analysis.style`` reads it): a colour of ``COLOURBLIND``, a
    marker of its own, and a hatch for bars (the registry's order is the legend order)."""

    colour: str
    marker: str
    hatch: str = ""


@dataclass(frozen=True)
class Strategy:
    """How a client opens a connection over several paths.

    Attributes:
        name: the name experiments and the CLI use.
        protocol: plain TCP or kernel MPTCP (IPPROTO_MPTCP); TCP for the userspace transport.
        start_all_at_once: attempt every path at connect() (RobE_SIM) instead of only the default.
        staggered: start the next path each time the timer fires while nothing is established
            (RobE_TIMER).
        summary: one line for help texts and the README.
        initial_path_selection: RobE_IPS: the path history (``robe.ips``) orders the paths before
            connect(); with ``start_all_at_once`` this is RobE_IPS+SIM: SIM until the history knows
            the destination, then the best path alone.
        kind: kernel sockets or the userspace transport.
        peer: what the server must run.
        setup_path: whose RTT a loss-free set-up takes.
        style: plot colour and marker.
    """

    name: str
    protocol: Protocol
    start_all_at_once: bool
    staggered: bool
    summary: str
    initial_path_selection: bool = False
    kind: Kind = Kind.KERNEL
    peer: Peer = Peer.MPTCP
    setup_path: SetupPath = SetupPath.DEFAULT
    style: PlotStyle = PlotStyle(COLOURBLIND[8], "x")

    @property
    def multipath(self) -> bool:
        """Whether the strategy ends with more than one subflow when the peer allows it."""
        return self.protocol is Protocol.MPTCP or self.kind is Kind.USERSPACE


_K, _U = Kind.KERNEL, Kind.USERSPACE

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("tcp", Protocol.TCP, False, False, "plain TCP on the default path",
                 peer=Peer.ANY_TCP, style=PlotStyle(COLOURBLIND[7], "s")),
        Strategy(
            "mptcp", Protocol.MPTCP, False, False,
            "kernel MPTCP: initial subflow on the default path, the path manager joins the others",
            style=PlotStyle(COLOURBLIND[0], "o"),
        ),
        Strategy(
            "robe-sim", Protocol.MPTCP, True, False,
            "RobE_SIM: MPTCP connect on every path at once, first established wins, the rest are reset",
            setup_path=SetupPath.FASTEST, style=PlotStyle(COLOURBLIND[2], "^"),
        ),
        Strategy(
            "robe-timer", Protocol.MPTCP, False, True,
            "RobE_TIMER: MPTCP connect on the default path, the next path each time the timer fires",
            setup_path=SetupPath.TIMER, style=PlotStyle(COLOURBLIND[1], "v"),
        ),
        Strategy(
            "robe-ips", Protocol.MPTCP, False, False,
            "RobE_IPS: MPTCP connect on the path the history ranks best (default path without history)",
            initial_path_selection=True, setup_path=SetupPath.SELECTED, style=PlotStyle(COLOURBLIND[0], "<", IPS_HATCH),
        ),
        Strategy(
            "robe-ips-timer", Protocol.MPTCP, False, True,
            "RobE_IPS+TIMER: the history's best path first, the next in its order each time the timer fires",
            initial_path_selection=True, setup_path=SetupPath.SELECTED, style=PlotStyle(COLOURBLIND[1], ">", IPS_HATCH),
        ),
        Strategy(
            "robe-ips-sim", Protocol.MPTCP, True, False,
            "RobE_IPS+SIM: SIM while the history knows nothing of the destination, then the best path alone",
            initial_path_selection=True, setup_path=SetupPath.SELECTED, style=PlotStyle(COLOURBLIND[2], "8", IPS_HATCH),
        ),
        Strategy(
            "mptcp-user", Protocol.TCP, False, False,
            "userspace transport, classic RFC 8684 timing: CAP on the default path, joins after the CAP_ACK",
            kind=_U, peer=Peer.USERSPACE, style=PlotStyle(COLOURBLIND[9], "D"),
        ),
        Strategy(
            "robe-downgrade", Protocol.TCP, True, False,
            "the paper's Proposal 1: every path at once, later subflows attached at once (CAP_ATTACH)",
            kind=_U, peer=Peer.USERSPACE, setup_path=SetupPath.FASTEST, style=PlotStyle(COLOURBLIND[3], "P"),
        ),
        Strategy(
            "robe-bbm", Protocol.TCP, True, False,
            "Proposal 2, break before make: every path at once, losers reset and joined after the CAP_ACK",
            kind=_U, peer=Peer.USERSPACE, setup_path=SetupPath.FASTEST, style=PlotStyle(COLOURBLIND[4], "X"),
        ),
        Strategy(
            "robe-esim", Protocol.TCP, True, False,
            "RobE_eSIM: every path at once, losers recycled with JOIN_CAP instead of reset",
            kind=_U, peer=Peer.USERSPACE, setup_path=SetupPath.FASTEST, style=PlotStyle(COLOURBLIND[5], "*"),
        ),
        Strategy(
            "robe-ips-user", Protocol.TCP, False, False,
            "RobE_IPS on the userspace transport: CAP on the path the history ranks best, joins after the CAP_ACK",
            initial_path_selection=True, kind=_U, peer=Peer.USERSPACE, setup_path=SetupPath.SELECTED,
            style=PlotStyle(COLOURBLIND[9], r"$\bowtie$", IPS_HATCH),
        ),
    )
}  # fmt: skip


class StrategyError(ValueError):
    """Unknown strategy name."""


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``, or StrategyError listing the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise StrategyError(f"strategy={name!r}: unknown (known: {', '.join(STRATEGIES)})") from None


def names(kind: Kind | None = None) -> tuple[str, ...]:
    """Every strategy name (of ``kind``), in the registry's (legend) order."""
    return tuple(s.name for s in STRATEGIES.values() if kind is None or s.kind is kind)


def kernel_strategy(name: str) -> Strategy:
    """The kernel-socket strategy called ``name``; StrategyError for userspace or unknown names."""
    strategy = get_strategy(name)
    if strategy.kind is not Kind.KERNEL:
        raise StrategyError(f"strategy={name!r}: runs on the userspace transport, not on kernel sockets")
    return strategy


def is_userspace(name: str) -> bool:
    """Whether ``name`` is a strategy of the userspace transport."""
    strategy = STRATEGIES.get(name)
    return strategy is not None and strategy.kind is Kind.USERSPACE


def with_setup_path(*paths: SetupPath) -> tuple[str, ...]:
    """The names of the strategies whose loss-free set-up takes one of ``paths``."""
    return tuple(s.name for s in STRATEGIES.values() if s.setup_path in paths)


def kernel_mptcp() -> tuple[str, ...]:
    """Kernel strategies on MPTCP sockets (the in-kernel path manager adds their subflows)."""
    return tuple(s.name for s in STRATEGIES.values() if s.kind is Kind.KERNEL and s.protocol is Protocol.MPTCP)


def plot_styles() -> dict[str, PlotStyle]:
    """name -> plot style, in legend order (``analysis.style`` draws every figure with them)."""
    return {s.name: s.style for s in STRATEGIES.values()}
