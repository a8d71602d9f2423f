"""In which order a sweep's attempts run: the cells likeliest to hold a long attempt first, random within a band.

A sweep's wall time on N workers is at least the start time of its last long attempt plus that
attempt's length. In experiment 1 the long attempts are the classic strategies' back-offs at high
loss: 127 s until connect() gives up on the SYN, and up to 15 minutes when the SYN got through but
the request is lost again and again (data RTO 0.2 s doubling up to 120 s). Started late, one such
attempt decides the wall time alone. Which attempt will be long is chance, but how likely it is
depends on the cell, so ``order_long_first`` sorts attempts by two bands (factor-of-4 bands, the
higher first):

1. the *tail risk* (``tail_risk``): the probability that an attempt outlasts the SYN give-up,
   i.e. that the SYN got through and then the request stays lost past that time;
2. then the expected attempt time (``expected_attempt_s``): a dead default path's 127 s attempts
   are certain but never longer, so they follow the risky cells and precede the short ones.

Replayed on the stored 42-minute ``paper`` sweep (``experiments.sweep_plan``), this beats both the
profile's random order and a plain longest-expected-first order, which fills every network with
the certain 127 s attempts first and starts the risky ones late.

Inside a band the profile's seeded random order is kept (a stable sort).

What that does to the randomisation argument: the profile's random order makes the time at which a
run is made independent of its cell, so a drift of the host (load, a noisy neighbour) cannot line
up with a strategy or a loss level. With bands, that still holds between all cells of one band
(strategies and loss levels of similar risk are interleaved at random) and between the repetitions
of a cell, but a band as a whole runs earlier than the next one: a drift over the sweep can now
differ *between* bands, e.g. between tcp and robe-sim at 90 % loss. Three things keep that
harmless here: a run's losses come from its own seed, never from the worker or from what ran
before (so the order cannot change the loss pattern); every row carries a timing canary
(``experiments.canary``) that measures the host's lateness around the attempt, so a busy period
shows up as flagged rows wherever it falls, and the report counts them; and the set-up times being
compared are hundreds of milliseconds to minutes apart at high loss, while the canary bounds the
host's contribution to 1 ms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

#: Linux's defaults that set how long a classic attempt waits (see analysis.model for the curve).
SYN_RTO_S = 1.0
DEFAULT_SYN_RETRIES = 6
DATA_RTO_MIN_S = 0.2
DATA_RTO_MAX_S = 120.0
DATA_RETRIES = 15
#: Strategies that open the default path only (the others race both paths).
SINGLE_PATH = frozenset({"tcp", "mptcp", "mptcp-user"})
#: RobE_TIMER starts its second path when the timer fires; the other RobE strategies at once.
STAGGERED = frozenset({"robe-timer"})
#: Width of a band (factor), the shortest duration and the smallest tail risk with a band of their own.
BAND_FACTOR = 4.0
BAND_FLOOR_S = 1.0
RISK_FLOOR = 1e-4


class Attempt(Protocol):
    """What ordering needs of a run: its strategy and loss level."""

    @property
    def strategy(self) -> str: ...

    @property
    def loss_pct(self) -> float: ...


A = TypeVar("A", bound=Attempt)


def syn_phase_s(loss: float, syn_retries: int) -> float:
    """Expected time until a SYN gets through or connect() gives up (SYNs at 0, 1, 3, 7, ... s)."""
    expected = 0.0
    for k in range(syn_retries + 1):
        expected += loss**k * (1 - loss) * (SYN_RTO_S * (2**k - 1))
    return float(expected + loss ** (syn_retries + 1) * SYN_RTO_S * (2 ** (syn_retries + 1) - 1))


def data_phase_s(loss: float) -> float:
    """Expected time until a request gets through or the kernel gives up (RTO 0.2 s doubling, <= 120 s)."""
    expected, sent_at, rto = 0.0, 0.0, DATA_RTO_MIN_S
    for j in range(DATA_RETRIES + 1):
        expected += loss**j * (1 - loss) * sent_at
        sent_at += rto
        rto = min(2 * rto, DATA_RTO_MAX_S)
    return expected + loss ** (DATA_RETRIES + 1) * sent_at


def expected_attempt_s(
    strategy: str, loss_pct: float, *, syn_retries: int | None = None, timer_s: float = 1.0, hold_s: float = 0.3
) -> float:
    """Rough expected wall time of one experiment 1 attempt (loss on the default path only).

    Only used to order attempts, never as a result: single-path strategies wait for the default
    path's SYN and request back-offs; RobE_TIMER at most for its timer; the other RobE strategies
    race the clean second path and end within a round trip.
    """
    loss = min(max(loss_pct / 100, 0.0), 1.0)
    retries = DEFAULT_SYN_RETRIES if syn_retries is None else syn_retries
    classic = syn_phase_s(loss, retries) + (1 - loss ** (retries + 1)) * data_phase_s(loss)
    if strategy in SINGLE_PATH:
        return classic + hold_s
    if strategy in STAGGERED:
        return min(classic, timer_s) + hold_s
    return hold_s


def tail_risk(strategy: str, loss_pct: float, *, syn_retries: int | None = None) -> float:
    """Probability that an attempt outlasts the SYN give-up (its request lost past that time).

    Single-path strategies: the SYN gets through (1 - p^(R+1)) and the request's first j
    transmissions are lost, j the first retransmission sent after the give-up time. RobE_TIMER:
    only when path 1's first SYN wins before the timer (1 - p). The other RobE strategies race the
    clean path and are never long.
    """
    loss = min(max(loss_pct / 100, 0.0), 1.0)
    retries = DEFAULT_SYN_RETRIES if syn_retries is None else syn_retries
    give_up = SYN_RTO_S * (2 ** (retries + 1) - 1)
    lost_needed, sent_at, rto = 0, 0.0, DATA_RTO_MIN_S
    while sent_at < give_up and lost_needed <= DATA_RETRIES:
        lost_needed += 1
        sent_at += rto
        rto = min(2 * rto, DATA_RTO_MAX_S)
    stuck = float(loss**lost_needed)
    if strategy in SINGLE_PATH:
        return (1 - loss ** (retries + 1)) * stuck
    if strategy in STAGGERED:
        return (1 - loss) * stuck
    return 0.0


def band(value: float, floor: float = BAND_FLOOR_S) -> int:
    """The band of a value: 0 below ``floor``, then one per factor BAND_FACTOR."""
    if not math.isfinite(value) or value < floor:
        return 0
    return 1 + int(math.log(value / floor, BAND_FACTOR))


def order_long_first(
    runs: Sequence[A], *, syn_retries: int | None = None, timer_s: float = 1.0, hold_s: float = 0.3
) -> list[A]:
    """``runs`` by tail-risk band, then expected-time band, higher first; inside a band the given
    (random) order is kept (stable sort)."""

    def key(run: A) -> tuple[int, int]:
        risk = tail_risk(run.strategy, run.loss_pct, syn_retries=syn_retries)
        expected = expected_attempt_s(run.strategy, run.loss_pct, syn_retries=syn_retries, timer_s=timer_s,
                                      hold_s=hold_s)  # fmt: skip
        return (-band(risk, RISK_FLOOR), -band(expected))

    keys = {id(run): key(run) for run in runs}
    return sorted(runs, key=lambda run: keys[id(run)])
