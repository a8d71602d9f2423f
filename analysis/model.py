"""Analytic model of connection set-up time under loss, as Linux 6.x behaves (the overlay of Figure 8).

Two times are modelled from connect() at the client, both on the server's clock: ``accept`` (the
server's accept() returns: the paper's metric) and ``request`` (the client's first request bytes
reach the server). Loss probability ``p`` applies to every packet the client sends on the lossy
path (the paper's ``tc`` on the client's egress); the server's packets are never lost; each
direction takes half the measured round-trip time ``R``.

What the kernel does, and the model with it (net/ipv4/tcp_timer.c, tcp_output.c, tcp_minisocks.c,
kernel/time/timer.c):

- **Client SYNs** leave at 0, 1, 3, 7, ... s (initial RTO 1 s, doubling; ``tcp_syn_linear_timeouts
  = 0`` as the profiles pin it), ``1 + tcp_syn_retries`` of them; connect() fails when all are
  lost. The SYN/ACK returns ``R`` after the SYN that got through; connect() returns then.
- **Timers fire late.** A timer of ``t`` jiffies (HZ 250: 4 ms) lands in a timer-wheel level whose
  granule is 1, 8, 64, 512, ... jiffies (level boundaries 63, 504, 4032, 32256 jiffies), and the
  wheel rounds its expiry *up* to the next granule boundary. Seen from the instant the timer was
  armed it fires uniformly within one granule after its nominal time: 0-4 ms for the tail loss
  probe, 0-32 ms for the 1 and 2 s SYN timers, 0-256 ms for 4-16 s, 0-2.05 s from 32 s on. Late
  firings add up along a back-off chain.
- **The client sends its ACK and, at once, its request**, each lost with probability ``p``. A lost
  request is resent as a **tail loss probe** after min(2 SRTT + rto_min, RTO) (one packet in
  flight; RTO = SRTT + max(2 SRTT, rto_min) rounded up to jiffies: 224 ms at R = 20.3 ms, so the
  probe fires at 224-228 ms), then by the **RTO**, re-armed after the probe and doubling up to
  120 s. Data retransmissions **give up by time**: when a timer fires 924.6 s (``tcp_retries2 =
  15`` modelled from rto_min 200 ms) after the first transmission.
- **The server** retransmits its SYN/ACK after 1, 3, 7, 15, 31 s (``tcp_synack_retries = 5``,
  each timer late as above) and drops the half-open connection one 32 s timer later (about 63
  s). Every retransmitted SYN/ACK that reaches the established client draws an ACK (a challenge
  ACK, RFC 5961), which crosses the lossy path and completes the handshake. A request or ACK that
  arrives after the drop gets a reset: the attempt fails.
- **accept()** returns at the first client packet that arrives (ACK, request or its
  retransmissions, or a challenge ACK); the **request** at the first copy of the request that
  arrives. An attempt counts only when both happen.

RobE_SIM and RobE_TIMER (``two_path_race``): path 1's SYN schedule races a clean path 2 started
at 0 (SIM) or at the timer (TIMER); the first SYN/ACK back wins and carries the request (the kernel
joins the other path only after the request is acknowledged). On paths of equal RTT the first SYNs
are a dead heat; path 1's connect() is issued first and wins it with the measured share
``PATH1_DEAD_HEAT_SHARE`` (0.82: pooled estimate over the stored paper run's 330 robe-sim
attempts; 26 of 30 at 0 % loss), not 1/2. With TIMER, path 1's retransmitted SYN leaves one
timer-wheel lateness after 1 s, the userspace timer's SYN on time: path 2 wins.

Times are distributions, not numbers: every lateness is uniform over its granule, discretised on
a grid, and sums of independent times are convolutions (``Spread``); a strategy's outcome is a
mixture of such spreads (``Distribution``), whose mean, median and sampling intervals for ``n``
attempts the report checks the measurements against. The whole process is simulated packet by
packet, independently, in ``tests/unit/test_model.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Linux defaults that shape the curves.
HZ = 250
TCP_TIMEOUT_INIT_S = 1.0
TCP_RTO_MIN_S = 0.2
TCP_RTO_MAX_S = 120.0
TCP_SYN_RETRIES = 6
TCP_SYNACK_RETRIES = 5
TCP_RETRIES2 = 15
#: Share of RobE_SIM dead heats (equal RTTs, both first SYNs delivered) that path 1 wins: its
#: connect() is issued first. Measured: pooled maximum-likelihood estimate over the paper run.
PATH1_DEAD_HEAT_SHARE = 0.82
#: Two SYN/ACKs closer than this are a dead heat (the emulated paths differ by microseconds).
DEAD_HEAT_S = 0.0005
#: Grid resolution of a spread: at most this many points (sums are re-gridded to it).
MAX_POINTS = 512
#: Points a single uniform lateness is discretised into.
LATENESS_POINTS = 32
#: Timer-wheel geometry (kernel/time/timer.c): 64 buckets per level, 8 x coarser per level.
_LVL_SIZE = 64
_LVL_CLK_SHIFT = 3


# ---------------------------------------------------------------------------------------------
# Discrete distributions on a grid.


@dataclass(frozen=True)
class Spread:
    """A (sub-)probability distribution on an even grid: P(T = start + i * step) = pmf[i].

    The pmf may sum to less than 1: the rest of the probability is carried elsewhere (other
    components of a mixture, or outcomes that never happen).
    """

    start: float
    step: float
    pmf: FloatArray

    @classmethod
    def point(cls, t: float, weight: float = 1.0) -> Spread:
        """All the weight at ``t``."""
        return cls(t, 0.0, np.array([weight], dtype=np.float64))

    @classmethod
    def uniform(cls, width: float, points: int = LATENESS_POINTS) -> Spread:
        """Uniform on (0, width], discretised at the midpoints of ``points`` equal cells."""
        if width <= 0:
            return cls.point(0.0)
        step = width / points
        return cls(step / 2, step, np.full(points, 1.0 / points))

    @property
    def weight(self) -> float:
        """Total probability."""
        return float(self.pmf.sum())

    @property
    def times(self) -> FloatArray:
        """The grid points."""
        return self.start + self.step * np.arange(self.pmf.size, dtype=np.float64)

    def shifted(self, dt: float) -> Spread:
        """T + dt."""
        return Spread(self.start + dt, self.step, self.pmf)

    def scaled(self, factor: float) -> Spread:
        """The same shape with ``factor`` times the probability."""
        return Spread(self.start, self.step, self.pmf * factor)

    def reweighted(self, factors: FloatArray) -> Spread:
        """Each point's probability multiplied by its factor (conditioning on point-wise events)."""
        return Spread(self.start, self.step, self.pmf * factors)

    def cdf(self, t: FloatArray | float) -> FloatArray:
        """P(T <= t) for each t (of the weight this spread carries)."""
        cumulative = np.cumsum(self.pmf)
        if self.step == 0:
            return np.where(np.asarray(t, dtype=np.float64) >= self.start, cumulative[-1], 0.0)
        index = np.floor((np.asarray(t, dtype=np.float64) - self.start) / self.step + 1e-9).astype(np.int64)
        return np.where(index < 0, 0.0, cumulative[np.clip(index, 0, self.pmf.size - 1)])

    def regridded(self, step: float) -> Spread:
        """The same distribution on a coarser grid; each point splits between its two neighbours
        so that the mean and the weight are kept exactly."""
        if self.step == 0 or step <= self.step:
            return self
        position = (self.times - self.start) / step
        low = np.floor(position).astype(np.int64)
        upper = position - low
        pmf = np.zeros(int(low[-1]) + 2)
        np.add.at(pmf, low, self.pmf * (1 - upper))
        np.add.at(pmf, low + 1, self.pmf * upper)
        return Spread(self.start, step, pmf)

    def __add__(self, other: Spread) -> Spread:
        """Distribution of the sum of two independent times (weights multiply)."""
        if self.step == 0:
            return other.shifted(self.start).scaled(float(self.pmf[0]))
        if other.step == 0:
            return self.shifted(other.start).scaled(float(other.pmf[0]))
        span = (self.pmf.size - 1) * self.step + (other.pmf.size - 1) * other.step
        step = max(self.step, other.step, span / (MAX_POINTS - 1))
        a, b = self.regridded(step), other.regridded(step)
        return Spread(a.start + b.start, step, np.convolve(a.pmf, b.pmf))


@dataclass(frozen=True)
class Distribution:
    """Set-up times of successful attempts as weighted atoms (seconds), sorted by time.

    ``success`` is the total weight: the probability that the attempt succeeds at all.
    """

    times: FloatArray
    probs: FloatArray
    _cumulative: FloatArray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))

    @classmethod
    def of(cls, components: Iterable[Spread]) -> Distribution:
        """The mixture of spreads (their weights are the mixture weights)."""
        parts = [c for c in components if c.weight > 0]
        if not parts:
            return cls(np.zeros(0), np.zeros(0), np.zeros(0))
        times = np.concatenate([c.times for c in parts])
        probs = np.concatenate([c.pmf for c in parts])
        keep = probs > 0
        times, probs = times[keep], probs[keep]
        order = np.argsort(times, kind="stable")
        return cls(times[order], probs[order], np.cumsum(probs[order]))

    @property
    def success(self) -> float:
        """Probability that the attempt succeeds."""
        return float(self._cumulative[-1]) if self._cumulative.size else 0.0

    def within(self, limit_s: float) -> Distribution:
        """Only the attempts that succeed within ``limit_s`` (a sweep's ``--timeout`` censors the others)."""
        keep = self.times <= limit_s
        return Distribution(self.times[keep], self.probs[keep], np.cumsum(self.probs[keep]))

    @property
    def mean_s(self) -> float:
        """Mean set-up time of successful attempts (nan if none can succeed)."""
        if self.success <= 0:
            return math.nan
        return float(np.dot(self.times, self.probs) / self.success)

    @property
    def sd_s(self) -> float:
        """Standard deviation of the set-up time of successful attempts."""
        if self.success <= 0:
            return math.nan
        mean = self.mean_s
        return math.sqrt(max(float(np.dot((self.times - mean) ** 2, self.probs) / self.success), 0.0))

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1) of the successful attempts' time (the lowest time reaching it)."""
        if self.success <= 0:
            return math.nan
        index = int(np.searchsorted(self._cumulative, q * self.success, side="left"))
        return float(self.times[min(index, self.times.size - 1)])

    @property
    def median_s(self) -> float:
        """Median set-up time of successful attempts."""
        return self.quantile(0.5)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> FloatArray:
        """Draws of the time of a successful attempt (inverse transform on the atoms)."""
        u = rng.random(shape) * self.success
        index = np.searchsorted(self._cumulative, u, side="right")
        return self.times[np.clip(index, 0, self.times.size - 1)]

    def interval(
        self, n: int, statistic: str = "mean", confidence: float = 0.95, draws: int = 20_000, seed: int = 8684
    ) -> tuple[float, float]:
        """Where the mean (or median) of ``n`` successful attempts falls with probability ``confidence``.

        From ``draws`` seeded samples of n attempts each, drawn from this distribution: the times
        are heavy-tailed and multi-modal, so a normal approximation would not do.
        """
        if statistic not in ("mean", "median"):
            raise ValueError(f"statistic={statistic!r}: must be 'mean' or 'median'")
        if n <= 0 or self.success <= 0:
            return (math.nan, math.nan)
        samples = self.sample(np.random.default_rng(seed), (draws, n))
        values = samples.mean(axis=1) if statistic == "mean" else np.median(samples, axis=1)
        tail = (1 - confidence) / 2
        low, high = np.quantile(values, [tail, 1 - tail])
        return (float(low), float(high))


@dataclass(frozen=True)
class SetupTimes:
    """The two metrics of one strategy at one loss level; their ``success`` is the same."""

    accept: Distribution
    request: Distribution

    def metric(self, name: str) -> Distribution:
        """``accept`` or ``request``."""
        if name not in ("accept", "request"):
            raise ValueError(f"metric={name!r}: must be 'accept' or 'request'")
        return self.accept if name == "accept" else self.request

    @property
    def success(self) -> float:
        """Probability that an attempt connects and delivers its request."""
        return self.request.success


# ---------------------------------------------------------------------------------------------
# The kernel's timers.


@dataclass(frozen=True)
class KernelTimers:
    """Jiffies and timer-wheel lateness of a kernel with ``hz`` ticks per second."""

    hz: int = HZ

    @property
    def jiffy_s(self) -> float:
        """One tick."""
        return 1.0 / self.hz

    def jiffies(self, seconds: float) -> int:
        """usecs_to_jiffies: rounded up."""
        return math.ceil(round(seconds * 1e6) * self.hz / 1e6 - 1e-9)

    def granule_jiffies(self, timeout_jiffies: int) -> int:
        """Granule of the wheel level that a timer ``timeout_jiffies`` ahead is queued in."""
        level = 0
        while timeout_jiffies >= (_LVL_SIZE - 1) << (level * _LVL_CLK_SHIFT):
            level += 1
        return 1 << (level * _LVL_CLK_SHIFT)

    def fire(self, timeout_jiffies: int) -> Spread:
        """Time from arming to firing: the timeout plus a lateness uniform over one granule."""
        late = Spread.uniform(self.granule_jiffies(timeout_jiffies) * self.jiffy_s)
        return late.shifted(timeout_jiffies * self.jiffy_s)

    def chain(self, timeouts_jiffies: Sequence[int]) -> list[Spread]:
        """Firing times of timers armed one after the other (each when the previous fired), from 0."""
        times = [Spread.point(0.0)]
        for timeout in timeouts_jiffies:
            times.append(times[-1] + self.fire(timeout))
        return times[1:]


def syn_timeouts(timers: KernelTimers, retries: int) -> list[int]:
    """The SYN (or SYN/ACK) retransmission timers in jiffies: 1, 2, 4, ... s, capped at 120 s."""
    base = timers.jiffies(TCP_TIMEOUT_INIT_S)
    return [min(base << k, timers.jiffies(TCP_RTO_MAX_S)) for k in range(retries)]


def rto_jiffies(timers: KernelTimers, rtt_s: float) -> int:
    """The RTO after one RTT sample: SRTT + max(2 SRTT, rto_min), in jiffies."""
    return timers.jiffies(rtt_s + max(2 * rtt_s, TCP_RTO_MIN_S))


def data_give_up_s() -> float:
    """tcp_retries2 as a time: the back-off from rto_min to 120 s modelled over 15 retries (924.6 s)."""
    thresh = int(math.log2(TCP_RTO_MAX_S / TCP_RTO_MIN_S))
    return ((2 << thresh) - 1) * TCP_RTO_MIN_S + (TCP_RETRIES2 - thresh) * TCP_RTO_MAX_S


def data_timeouts(timers: KernelTimers, rtt_s: float) -> list[int]:
    """Timers between the request's transmissions, in jiffies: the loss probe, then the RTOs.

    The probe fires after min(2 SRTT + rto_min, RTO); the RTO is re-armed after it and doubles
    (capped at 120 s). Retransmissions stop when a timer fires 924.6 s after the first
    transmission (nominal times: lateness moves the boundary by far less than a back-off step).
    """
    rto = rto_jiffies(timers, rtt_s)
    probe = min(timers.jiffies(2 * rtt_s + TCP_RTO_MIN_S), rto)
    timeouts, elapsed, step = [probe], probe, rto
    give_up = data_give_up_s() * timers.hz
    while elapsed + min(step, timers.jiffies(TCP_RTO_MAX_S)) < give_up:
        timeouts.append(min(step, timers.jiffies(TCP_RTO_MAX_S)))
        elapsed += timeouts[-1]
        step *= 2
    return timeouts


def syn_send_times(syn_rto_s: float = TCP_TIMEOUT_INIT_S, syn_retries: int = TCP_SYN_RETRIES) -> list[float]:
    """Nominal times at which SYN number k (0-based) leaves: 0, 1, 3, 7, ... s."""
    return [syn_rto_s * (2**k - 1) for k in range(syn_retries + 1)]


def data_send_times(rtt_s: float, timers: KernelTimers | None = None) -> list[float]:
    """Nominal times (no lateness) of the request's transmissions after the first, from 0."""
    timers = timers or KernelTimers()
    return [0.0, *np.cumsum(data_timeouts(timers, rtt_s)) * timers.jiffy_s]


# ---------------------------------------------------------------------------------------------
# One path.


@dataclass(frozen=True)
class LossyPath:
    """The default path: RTT, loss on the client's packets, and the kernels' settings."""

    rtt_s: float
    loss: float
    syn_retries: int = TCP_SYN_RETRIES
    synack_retries: int = TCP_SYNACK_RETRIES
    timers: KernelTimers = KernelTimers()

    def __post_init__(self) -> None:
        if not 0 <= self.loss <= 1:
            raise ValueError(f"loss={self.loss!r}: must be within 0..1")
        if self.rtt_s < 0:
            raise ValueError(f"rtt_s={self.rtt_s!r}: must be >= 0")
        if self.syn_retries < 0:
            raise ValueError(f"syn_retries={self.syn_retries!r}: must be >= 0")

    def syn_sends(self) -> list[Spread]:
        """When each SYN leaves (SYN 0 at 0)."""
        return [Spread.point(0.0), *self.timers.chain(syn_timeouts(self.timers, self.syn_retries))]

    def after_synack(self) -> tuple[list[Spread], list[Spread]]:
        """Both metrics (accept, request) from the SYN/ACK's arrival at the client (connect()
        returning), as mixture parts weighted by the probability of succeeding that way, given
        that a SYN got through."""
        p, q = self.loss, 1 - self.loss
        half = self.rtt_s / 2
        sends = [Spread.point(0.0), *self.timers.chain(data_timeouts(self.timers, self.rtt_s))]
        n_data = len(sends)
        synacks = self.timers.chain(syn_timeouts(self.timers, self.synack_retries))  # after the first
        drop_timeout = syn_timeouts(self.timers, self.synack_retries + 1)[-1]
        drop = (synacks[-1] if synacks else Spread.point(0.0)) + self.timers.fire(drop_timeout)
        # Everything on the server's clock, from the instant the client's first ACK would arrive.
        # A client packet sent x after connect() returns arrives at x; the challenge ACK drawn by
        # the server's SYN/ACK number m at U_m; the server drops the half-open connection at
        # Drop - R (its timers run from the SYN's arrival, R/2 before connect() returns + R/2).
        drop = drop.shifted(-self.rtt_s)
        retransmits = sends[1:]

        def none_delivered_by(chain: list[Spread], t: FloatArray) -> FloatArray:
            # P(no packet of a chain of independent copies, each lost with p, arrived by t).
            delivered = np.zeros_like(t)
            for m, when in enumerate(chain):
                delivered += p**m * q * when.cdf(t)
            return 1 - delivered

        accept: list[Spread] = [Spread.point(0.0, q + p * q * (1 - p ** (n_data - 1)))]
        request: list[Spread] = [Spread.point(0.0, q)]
        for j, when in enumerate(retransmits, start=1):
            t = when.times
            before_drop = 1 - drop.cdf(t)
            # The first copy of the request that arrives is copy j: the request's time. It also
            # completes the handshake unless the server has dropped it and nothing else did.
            request.append(when.reweighted(p**j * q * (1 - p ** (1 + len(synacks)) * (1 - before_drop))))
            # accept() at copy j: ACK and copy 0 lost, copies 1..j-1 lost, no challenge ACK yet.
            accept.append(when.reweighted(p**2 * p ** (j - 1) * q * none_delivered_by(synacks, t) * before_drop))
        for m, when in enumerate(synacks):
            t = when.times
            # accept() at challenge ACK m; the request must still arrive later.
            later = none_delivered_by(retransmits, t) - p ** (n_data - 1)
            accept.append(when.reweighted(p**2 * p**m * q * np.clip(later, 0, None)))
        return [s.shifted(half) for s in accept], [s.shifted(half) for s in request]


def _compose(start: Spread, tail: tuple[list[Spread], list[Spread]]) -> tuple[list[Spread], list[Spread]]:
    """Both metrics' mixture parts for a SYN/ACK arriving at ``start`` (a weighted spread)."""
    return [start + part for part in tail[0]], [start + part for part in tail[1]]


def single_path(
    rtt_s: float,
    loss: float,
    *,
    syn_retries: int = TCP_SYN_RETRIES,
    synack_retries: int = TCP_SYNACK_RETRIES,
    timers: KernelTimers | None = None,
) -> SetupTimes:
    """TCP or MPTCP with the initial subflow on a path with client-egress loss ``loss`` (0..1)."""
    path = LossyPath(rtt_s, loss, syn_retries, synack_retries, timers or KernelTimers())
    tail = path.after_synack()
    accept: list[Spread] = []
    request: list[Spread] = []
    for k, send in enumerate(path.syn_sends()):
        weight = loss**k * (1 - loss)
        if weight <= 0:
            continue
        parts = _compose(send.shifted(rtt_s).scaled(weight), tail)
        accept += parts[0]
        request += parts[1]
    return SetupTimes(Distribution.of(accept), Distribution.of(request))


def two_path_race(
    rtt1_s: float,
    loss1: float,
    rtt2_s: float,
    start2_s: float,
    *,
    tie_share: float = PATH1_DEAD_HEAT_SHARE,
    syn_retries: int = TCP_SYN_RETRIES,
    synack_retries: int = TCP_SYNACK_RETRIES,
    timers: KernelTimers | None = None,
) -> SetupTimes:
    """RobE over a lossy default path (client-egress loss ``loss1``) and a clean path 2 started at ``start2_s``.

    RobE_SIM is ``start2_s = 0``; RobE_TIMER is ``start2_s = timer``. The first SYN/ACK back wins;
    a dead heat (equal RTTs, both first SYNs through) goes to path 1 with probability
    ``tie_share``. A path-1 winner continues as ``single_path`` (its request can be lost); a
    path-2 winner has its ACK and request at the server 1.5 x RTT2 after path 2 started.
    """
    if not 0 <= tie_share <= 1:
        raise ValueError(f"tie_share={tie_share!r}: must be within 0..1")
    path = LossyPath(rtt1_s, loss1, syn_retries, synack_retries, timers or KernelTimers())
    tail = path.after_synack()
    path2_back = start2_s + rtt2_s
    accept: list[Spread] = []
    request: list[Spread] = []
    path2_weight = loss1 ** (syn_retries + 1)  # every path-1 SYN lost
    for k, send in enumerate(path.syn_sends()):
        weight = loss1**k * (1 - loss1)
        if weight <= 0:
            continue
        back = send.shifted(rtt1_s)
        if k == 0 and start2_s == 0 and abs(rtt1_s - rtt2_s) <= DEAD_HEAT_S:
            wins = np.full(back.pmf.size, tie_share)
        else:
            wins = (back.times < path2_back - DEAD_HEAT_S).astype(np.float64)
        winner = back.reweighted(wins).scaled(weight)
        path2_weight += weight - winner.weight
        if winner.weight > 0:
            parts = _compose(winner, tail)
            accept += parts[0]
            request += parts[1]
    path2 = Spread.point(start2_s + 1.5 * rtt2_s, path2_weight)
    return SetupTimes(Distribution.of([*accept, path2]), Distribution.of([*request, path2]))
