"""Analytic expectation of connection set-up time under loss (the overlay of Figure 8).

The measured quantity is connect() at the client -> the client's first request bytes at the
server (on one clock). For single-path TCP and MPTCP with loss probability ``p`` on the client's
egress of the default path (the paper's ``tc`` on the client), RTT ``R``:

- SYN transmissions leave at 0, 1, 3, 7, ... s (Linux: initial SYN RTO 1 s, doubling), at most
  ``1 + tcp_syn_retries`` of them; each is lost with probability p. If all are lost the kernel
  gives up (the run fails).
- The SYN/ACK (not lossy in the ``up`` case) returns R after the SYN that got through; the client
  then sends its request, lost with probability p; a lost request is retransmitted first as a
  tail loss probe (PTO = 1.5 R + 200 ms for one packet in flight), then after the data RTO
  (srtt + max(2R, 200 ms), doubling, capped at 120 s); the request arrives 0.5 R after the
  transmission that got through.

So T = S_K + R + D_J + 0.5 R, with K, J independent truncated geometric counts of losses. The
model returns the distribution of T given success (mean, standard deviation, the interval of a
sample mean) and the success probability. ``two_path_race`` models RobE_SIM and RobE_TIMER as a
race of path 1's SYN schedule against a clean path 2; it reduces to the paper's figures: 1.5 x RTT
of the fastest working path (eq. 2) and, with a dead default path, timer + 1.5 x RTT of path 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Linux defaults that shape the curve.
SYN_RTO_S = 1.0
TCP_SYN_RETRIES = 6
TCP_RTO_MIN_S = 0.2
TCP_DELACK_MAX_S = 0.2
TCP_RTO_MAX_S = 120.0
TCP_RETRIES2 = 15


@dataclass(frozen=True)
class Expectation:
    """Model figures at one loss level.

    Attributes:
        mean_s: expected set-up time of successful connections (nan if none can succeed).
        sd_s: its standard deviation.
        success: probability that the connection is made before the kernel gives up.
        outcomes: the distribution of successful set-up times: (probability, seconds) pairs whose
            probabilities sum to ``success`` (empty when nothing succeeds).
    """

    mean_s: float
    sd_s: float
    success: float
    outcomes: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_outcomes(cls, outcomes: list[tuple[float, float]]) -> Expectation:
        """Moments and success of a discrete distribution of successful set-up times."""
        kept = tuple((w, t) for w, t in outcomes if w > 0)
        success = math.fsum(w for w, _ in kept)
        if success <= 0:
            return cls(math.nan, math.nan, 0.0)
        mean = math.fsum(w * t for w, t in kept) / success
        variance = max(math.fsum(w * t * t for w, t in kept) / success - mean * mean, 0.0)
        return cls(mean, math.sqrt(variance), success, kept)

    def interval(self, n: int, confidence: float = 0.95, draws: int = 20_000) -> tuple[float, float]:
        """Where the mean of ``n`` successful runs falls with probability ``confidence``.

        Computed by drawing ``draws`` samples of n set-up times from the model's own distribution
        (seeded, so figures are reproducible): the times are heavy-tailed, and a normal
        approximation would give intervals reaching below zero.
        """
        if n <= 0 or math.isnan(self.mean_s):
            return (math.nan, math.nan)
        if not self.outcomes or self.sd_s == 0:
            return (self.mean_s, self.mean_s)
        weights = np.array([w for w, _ in self.outcomes])
        times = np.array([t for _, t in self.outcomes])
        rng = np.random.default_rng(8684)
        means = rng.choice(times, size=(draws, n), p=weights / weights.sum()).mean(axis=1)
        tail = (1 - confidence) / 2
        low, high = np.quantile(means, [tail, 1 - tail])
        return (float(low), float(high))


def syn_send_times(syn_rto_s: float = SYN_RTO_S, syn_retries: int = TCP_SYN_RETRIES) -> list[float]:
    """Times at which SYN number k (0-based) leaves: 0, 1, 3, 7, ... for an initial RTO of 1 s."""
    return [syn_rto_s * (2**k - 1) for k in range(syn_retries + 1)]


def data_retransmit_delays(rtt_s: float, retries: int = TCP_RETRIES2) -> list[float]:
    """Delay after the first request transmission of transmission j (0-based).

    Linux sends a lone lost segment's first retransmission as a tail loss probe, after
    PTO = max(2 srtt, 1.5 srtt + 200 ms) (one packet in flight), then re-arms the RTO,
    srtt + max(2 srtt, 200 ms), and backs it off (doubling, capped at 120 s).
    """
    pto = max(2 * rtt_s, 1.5 * rtt_s + TCP_DELACK_MAX_S)
    rto = rtt_s + max(2 * rtt_s, TCP_RTO_MIN_S)
    delays, t, step = [0.0, pto], pto, rto
    for _ in range(retries - 1):
        t += min(step, TCP_RTO_MAX_S)
        delays.append(t)
        step *= 2
    return delays


def _truncated_geometric(p: float, n: int) -> list[float]:
    """P(first success at try k) for k < n, tries independent with failure probability p."""
    return [(p**k) * (1 - p) for k in range(n)]


def single_path(rtt_s: float, loss: float, *, syn_rto_s: float = SYN_RTO_S,
                syn_retries: int = TCP_SYN_RETRIES) -> Expectation:  # fmt: skip
    """TCP or MPTCP with the initial subflow on a path with egress loss ``loss`` (0..1) and RTT ``rtt_s``."""
    if not 0 <= loss <= 1:
        raise ValueError(f"loss={loss!r}: must be within 0..1")
    if rtt_s < 0:
        raise ValueError(f"rtt_s={rtt_s!r}: must be >= 0")
    syn_times = syn_send_times(syn_rto_s, syn_retries)
    data_delays = data_retransmit_delays(rtt_s)
    p_syn = _truncated_geometric(loss, len(syn_times))
    p_data = _truncated_geometric(loss, len(data_delays))
    outcomes = [
        (ps * pd, s + rtt_s + d + 0.5 * rtt_s)
        for ps, s in zip(p_syn, syn_times, strict=True)
        for pd, d in zip(p_data, data_delays, strict=True)
    ]
    return Expectation.from_outcomes(outcomes)


def two_path_race(
    rtt1_s: float,
    loss1: float,
    rtt2_s: float,
    start2_s: float,
    *,
    tie_share: float = 0.5,
    syn_rto_s: float = SYN_RTO_S,
    syn_retries: int = TCP_SYN_RETRIES,
) -> Expectation:
    """RobE over a lossy default path (egress loss ``loss1``) and a clean path 2 started at ``start2_s``.

    RobE_SIM is ``start2_s = 0``; RobE_TIMER is ``start2_s = timer``. Path 1's SYNs leave on the
    kernel's schedule; the first SYN/ACK to return wins (a dead heat goes to path 1 with
    probability ``tie_share``). If path 1 wins, its request is lost with probability ``loss1`` and
    retransmitted on the data RTO schedule (the kernel joins path 2 only after the request is
    acknowledged, so path 2 cannot carry it); if path 2 wins, the request arrives 0.5 x RTT2 later.
    """
    if not 0 <= loss1 <= 1:
        raise ValueError(f"loss1={loss1!r}: must be within 0..1")
    if not 0 <= tie_share <= 1:
        raise ValueError(f"tie_share={tie_share!r}: must be within 0..1")
    syn_times = syn_send_times(syn_rto_s, syn_retries)
    data_delays = data_retransmit_delays(rtt1_s)
    p_data = _truncated_geometric(loss1, len(data_delays))
    path2_time = start2_s + 1.5 * rtt2_s
    outcomes: list[tuple[float, float]] = []  # (probability, set-up time) of successful cases

    def path1_wins(weight: float, established: float) -> None:
        # The request may still be lost every time (the kernel then gives up): not an outcome.
        for pd, d in zip(p_data, data_delays, strict=True):
            outcomes.append((weight * pd, established + d + 0.5 * rtt1_s))

    never = 1.0
    for k, send in enumerate(syn_times):
        weight = (loss1**k) * (1 - loss1)
        never -= weight
        path1_back, path2_back = send + rtt1_s, start2_s + rtt2_s
        if math.isclose(path1_back, path2_back, abs_tol=1e-9):
            path1_wins(weight * tie_share, path1_back)
            outcomes.append((weight * (1 - tie_share), path2_time))
        elif path1_back < path2_back:
            path1_wins(weight, path1_back)
        else:
            outcomes.append((weight, path2_time))
    outcomes.append((max(never, 0.0), path2_time))
    return Expectation.from_outcomes(outcomes)
