"""The connection-establishment strategies the kernel-socket endpoints implement.

Each strategy is data: which socket protocol it uses and when it starts an attempt on each path.
``robe.race`` turns that into decisions; ``robe.client`` carries them out on real sockets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Protocol(enum.StrEnum):
    """Socket protocol of every attempt."""

    TCP = "tcp"
    MPTCP = "mptcp"


@dataclass(frozen=True)
class Strategy:
    """How a client opens a connection over several paths.

    Attributes:
        name: the name experiments and the CLI use.
        protocol: plain TCP or kernel MPTCP (IPPROTO_MPTCP).
        start_all_at_once: attempt every path at connect() (RobE_SIM) instead of only the default.
        staggered: start the next path each time the timer fires while nothing is established
            (RobE_TIMER).
        summary: one line for help texts and the README.
        initial_path_selection: RobE_IPS: the path history (``robe.ips``) orders the paths before
            connect(); with ``start_all_at_once`` this is RobE_IPS+SIM: SIM until the history knows
            the destination, then the best path alone.
    """

    name: str
    protocol: Protocol
    start_all_at_once: bool
    staggered: bool
    summary: str
    initial_path_selection: bool = False


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("tcp", Protocol.TCP, False, False, "plain TCP on the default path"),
        Strategy(
            "mptcp", Protocol.MPTCP, False, False,
            "kernel MPTCP: initial subflow on the default path, the path manager joins the others",
        ),
        Strategy(
            "robe-sim", Protocol.MPTCP, True, False,
            "RobE_SIM: MPTCP connect on every path at once, first established wins, the rest are reset",
        ),
        Strategy(
            "robe-timer", Protocol.MPTCP, False, True,
            "RobE_TIMER: MPTCP connect on the default path, the next path each time the timer fires",
        ),
        Strategy(
            "robe-ips", Protocol.MPTCP, False, False,
            "RobE_IPS: MPTCP connect on the path the history ranks best (default path without history)",
            initial_path_selection=True,
        ),
        Strategy(
            "robe-ips-timer", Protocol.MPTCP, False, True,
            "RobE_IPS+TIMER: the history's best path first, the next in its order each time the timer fires",
            initial_path_selection=True,
        ),
        Strategy(
            "robe-ips-sim", Protocol.MPTCP, True, False,
            "RobE_IPS+SIM: SIM while the history knows nothing of the destination, then the best path alone",
            initial_path_selection=True,
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
