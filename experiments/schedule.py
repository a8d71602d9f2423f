"""In which order a sweep's attempts run: longest expected attempts first, random within a band.

A sweep's wall time on N workers is at least its longest attempt plus the time at which that
attempt started. In experiment 1 the long attempts are the classic strategies' SYN and request
back-offs at high loss (127 s to give up on the SYN, up to 15 minutes on a lost request); started
last, one of them decides the wall time alone. ``order_long_first`` therefore runs attempts in
*bands* of expected duration (factor-of-4 bands of ``expected_attempt_s``), the longest band first,
and keeps the profile's seeded random order inside each band.

What that does to the randomisation argument: the profile's random order makes the time at which a
run is made independent of its cell, so a drift of the host (load, a noisy neighbour) cannot line
up with a strategy or a loss level. With bands, that still holds between all cells of one band
(strategies and loss levels of similar expected duration are interleaved at random) and between
the repetitions of a cell, but a band as a whole runs earlier than the next one: a drift over the
sweep can now differ *between* bands. Three things keep that harmless here: a run's losses come
from its own seed, never from the worker or from what ran before (so the order cannot change the
loss pattern); every row carries a timing canary (``experiments.canary``) that measures the host's
lateness around the attempt, so a busy period shows up as flagged rows wherever it falls; and the
comparison Figure 8 is about, strategies at one loss level, mostly stays inside a band for the
classic strategies (the RobE strategies at high loss sit in an earlier, shorter band than tcp and
mptcp at the same loss, and the canary is what vouches for both).
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
#: Width of a band of expected durations (factor), and the shortest duration with a band of its own.
BAND_FACTOR = 4.0
BAND_FLOOR_S = 1.0


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


def band(expected_s: float) -> int:
    """The band of an expected duration: 0 below BAND_FLOOR_S, then one per factor BAND_FACTOR."""
    if not math.isfinite(expected_s) or expected_s < BAND_FLOOR_S:
        return 0
    return 1 + int(math.log(expected_s / BAND_FLOOR_S, BAND_FACTOR))


def order_long_first(
    runs: Sequence[A], *, syn_retries: int | None = None, timer_s: float = 1.0, hold_s: float = 0.3
) -> list[A]:
    """``runs`` with the longest band first; inside a band the given (random) order is kept (stable)."""
    bands = {
        id(run): band(expected_attempt_s(run.strategy, run.loss_pct, syn_retries=syn_retries, timer_s=timer_s,
                                         hold_s=hold_s))
        for run in runs
    }  # fmt: skip
    return sorted(runs, key=lambda run: -bands[id(run)])
