"""RobE_IPS between the path history (``robe.ips``) and the drivers (``robe.client``, ``robe.proxy.aio_connect``).

``plan`` turns a strategy, the history and the paths into what the race needs: the order of the
paths, and for RobE_IPS+SIM whether it races every path (SIM: the history trusts no path yet, or
its best path is lossy or suspect) or starts on the trusted path with RobE_TIMER's fallback along
the history's order (so a trusted path that stops answering still cannot fail the connection).
``HistoryFeed`` reports what the driver saw (attempts started, established, failed, reset;
the subflows' smoothed RTTs) to the history. Paths are named in the history by their source
address, so a path keeps its history when the list of paths changes.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from robe.ips import Attempt, PathHistory, destination_key
from robe.strategies import Strategy

NS = 1e9
#: A loser counts as overtaken when the winner started at least this much later: SIM starts its
#: attempts microseconds apart (no evidence), TIMER one timer later (evidence).
OVERTAKEN_AFTER_S = 0.05
MAX_SCOPES = 64
_scopes: OrderedDict[str, PathHistory] = OrderedDict()
_scopes_lock = threading.Lock()


def shared_history(scope: str = "default") -> PathHistory:
    """The process's history for ``scope`` (one per client host normally; experiments keep one per
    strategy and condition so that runs do not learn from each other). At most ``MAX_SCOPES``."""
    with _scopes_lock:
        history = _scopes.get(scope)
        if history is None:
            history = _scopes[scope] = PathHistory()
            while len(_scopes) > MAX_SCOPES:
                _scopes.popitem(last=False)
        _scopes.move_to_end(scope)
        return history


@dataclass(frozen=True)
class Plan:
    """How one connection uses its paths.

    Attributes:
        strategy: the strategy to race with (RobE_IPS+SIM as a staggered race, TIMER's fallback,
            once the history trusts a path).
        order: path indexes in the order to try them (0 is the default path).
        key: the history's destination key ("" for strategies without IPS).
        mode: ``default`` (no IPS), ``ips`` or ``sim`` (RobE_IPS+SIM while no path is trusted).
        history: what the history held for the destination when the plan was made.
    """

    strategy: Strategy
    order: list[int]
    key: str = ""
    mode: str = "default"
    history: dict[str, Any] = field(default_factory=dict)


def plan(strategy: Strategy, history: PathHistory | None, server: str, sources: list[str], now_ns: int) -> Plan:
    """The plan of one connect to ``server`` (an IPv4 address) over ``sources`` (default path first)."""
    default = list(range(len(sources)))
    if not strategy.initial_path_selection or history is None:
        return Plan(strategy, default)
    key = destination_key(server)
    now = now_ns / NS
    snapshot = history.snapshot(key, now)
    ranked = history.order(key, sources, now)
    if strategy.start_all_at_once:
        if history.trusted(key, sources, now) is None:
            return Plan(strategy, [sources.index(s) for s in ranked], key, "sim", snapshot)
        # The trusted path first; the next in the order when the timer fires: SIM's guarantee kept.
        strategy = dataclasses.replace(strategy, start_all_at_once=False, staggered=True)
    return Plan(strategy, [sources.index(s) for s in ranked], key, "ips", snapshot)


class HistoryFeed:
    """What one connection's driver reports to the history (a no-op without history or key)."""

    def __init__(self, history: PathHistory | None, key: str, sources: list[str]) -> None:
        self.history = history if key else None
        self.key = key
        self.sources = sources
        self.attempts: dict[int, Attempt] = {}
        self.winner_started: float | None = None  # when the established attempt started
        # Paths whose attempt may be this connection's initial subflow (a subflow there is no join). A
        # loser's socket is gone once reset or failed: a subflow on its path later is the path
        # manager's MP_JOIN, so after a SIM race the losing path's join is an outcome too.
        self.tried: set[int] = set()

    def started(self, path: int, now_ns: int) -> None:
        """The attempt on ``path`` sent its SYN."""
        self.tried.add(path)
        if self.history is not None:
            self.attempts[path] = self.history.attempt_started(self.key, self.sources[path], now_ns / NS)

    def established(self, path: int, now_ns: int, retransmitted: int) -> None:
        """The attempt on ``path`` completed its handshake after ``retransmitted`` SYN retransmissions
        (``True``: at least one; then not an RTT sample, and a partial failure of the path)."""
        attempt = self.attempts.pop(path, None)
        if self.history is not None and attempt is not None:
            if self.winner_started is None:
                self.winner_started = attempt.started_at
            self.history.attempt_established(attempt, now_ns / NS, retransmitted)

    def failed(self, path: int, now_ns: int) -> None:
        """The attempt on ``path`` failed."""
        self.tried.discard(path)
        attempt = self.attempts.pop(path, None)
        if self.history is not None and attempt is not None:
            self.history.attempt_failed(attempt, now_ns / NS)

    def dropped(self, path: int, now_ns: int) -> None:
        """The client reset the attempt on ``path`` (a loser, or the connect was abandoned); a loser that
        started before the winner was overtaken (RobE_TIMER's case): evidence against its path."""
        self.tried.discard(path)
        attempt = self.attempts.pop(path, None)
        if self.history is not None and attempt is not None:
            winner = self.winner_started
            overtaken = winner is not None and attempt.started_at <= winner - OVERTAKEN_AFTER_S
            self.history.attempt_dropped(attempt, now_ns / NS, overtaken)

    def subflow(self, local: str, rtt_us: int, now_ns: int, retransmits: int | None = None) -> None:
        """A subflow from ``local`` (``ADDR:PORT``) is established; ``rtt_us`` is its path's RTT as the
        kernel measured it (``kernel.Subflow.path_rtt_us``: the minimum, not the smoothed RTT);
        ``retransmits``: its retransmissions (``tcpi_total_retrans``), which make a subflow on a path
        this connection did not attempt (the path manager's join) a set-up outcome of that path."""
        address = local.rsplit(":", 1)[0]
        if self.history is not None and rtt_us > 0 and address in self.sources:
            joined = self.sources.index(address) not in self.tried
            outcome = retransmits if joined else None
            self.history.rtt_sample(self.key, address, rtt_us / 1e6, now_ns / NS, outcome)
