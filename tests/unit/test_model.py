"""The analytic set-up time model against the kernel's constants, an independent packet-by-packet
simulation of the same kernel behaviour, and the stored paper run."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from analysis import model
from analysis.experiment1_cells import summarise
from analysis.report import statistics_outside
from analysis.schema import read_runs

PAPER = Path(__file__).resolve().parents[2] / "results" / "experiment1" / "paper"
R = 0.0203  # the measured RTT of the stored runs


# ---------------------------------------------------------------------------------------------
# An independent model: one attempt at a time, packets and kernel timers simulated directly
# (timer-wheel arithmetic of kernel/time/timer.c on a jiffies clock with a random phase; timers
# re-armed from their own expiry tick), nothing shared with analysis.model but the sysctl values.

HZ = 250


def wheel_fire(now_s: float, timeout_jiffies: int) -> float:
    """When a timer armed at ``now_s`` for ``timeout_jiffies`` fires: its bucket's expiry tick."""
    jiffies = math.floor(now_s * HZ)
    expires = jiffies + timeout_jiffies
    level = 0
    while timeout_jiffies >= 63 << (3 * level):
        level += 1
    shift = 3 * level
    bucket = ((expires >> shift) + 1) << shift
    return bucket / HZ


@dataclass
class Attempt:
    accept: float | None
    request: float | None


def simulate_path(rng, start, rtt, loss, syn_retries=6):
    """One attempt on a lossy path whose connect() is called at ``start``; times from 0."""
    t, syn_at = start, None
    for k in range(syn_retries + 1):
        if rng.random() >= loss:
            syn_at = t
            break
        if k < syn_retries:
            t = wheel_fire(t, min(HZ << k, 120 * HZ))
    return syn_at


def continue_path(rng, syn_at, rtt, loss, synack_retries=5):
    """From a delivered SYN: server arrival times of the accept() and of the request."""
    half = rtt / 2
    connected = syn_at + rtt
    arrivals, requests = [], []
    if rng.random() >= loss:  # the client's ACK
        arrivals.append(connected + half)
    # The request, its loss probe and RTOs.
    rto = math.ceil((rtt + max(2 * rtt, 0.2)) * HZ - 1e-9)
    probe = min(math.ceil((2 * rtt + 0.2) * HZ - 1e-9), rto)
    tx, step, first = connected, rto, True
    while True:
        if rng.random() >= loss:
            requests.append(tx + half)
            break
        nxt = wheel_fire(tx, probe if first else min(step, 120 * HZ))
        if not first:
            step *= 2
        first = False
        if nxt - connected >= 924.6:
            break
        tx = nxt
    # The server's SYN/ACK retransmissions, each drawing a challenge ACK; then the drop.
    synack = syn_at + half
    timer = synack
    for m in range(synack_retries):
        timer = wheel_fire(timer, HZ << m)
        if rng.random() >= loss:
            arrivals.append(timer + rtt)
    drop = wheel_fire(timer, HZ << synack_retries)
    candidates = [a for a in arrivals + requests[:1] if a < drop]
    accept = min(candidates) if candidates else None
    request = requests[0] if requests and accept is not None else None
    return Attempt(accept, request if accept is not None else None)


def simulate(n, loss, strategy="single", start2=0.0, tie=model.PATH1_DEAD_HEAT_SHARE, seed=1):
    rng = np.random.default_rng(seed)
    accepts, requests = [], []
    for _ in range(n):
        phase = rng.random() / HZ  # where connect() falls between two ticks
        syn_at = simulate_path(rng, phase, R, loss)
        if strategy == "single":
            attempt = continue_path(rng, syn_at, R, loss) if syn_at is not None else Attempt(None, None)
        else:
            back2 = phase + start2 + R
            back1 = syn_at + R if syn_at is not None else math.inf
            dead_heat = syn_at == phase and start2 == 0
            path1 = (rng.random() < tie) if dead_heat else back1 < back2
            if path1:
                attempt = continue_path(rng, syn_at, R, loss)
            else:
                attempt = Attempt(phase + start2 + 1.5 * R, phase + start2 + 1.5 * R)
        if attempt.accept is not None and attempt.request is not None:
            accepts.append(attempt.accept - phase)
            requests.append(attempt.request - phase)
    return np.array(accepts), np.array(requests)


# ---------------------------------------------------------------------------------------------
# Kernel constants.


def test_timer_wheel_granules_follow_the_level_boundaries():
    timers = model.KernelTimers(250)
    # LVL_START(n) = 63 << 3(n-1): 63, 504, 4032, 32256 jiffies.
    assert [timers.granule_jiffies(j) for j in (56, 62, 63, 250, 503, 504, 1000, 4031, 4032, 30000)] == [
        1,
        1,
        8,
        8,
        8,
        64,
        64,
        64,
        512,
        512,
    ]
    # Seen from arming: 0-4 ms for the loss probe, 0-32 ms at 1-2 s, 0-256 ms at 4-16 s, 0-2 s from 32 s.
    assert timers.fire(56).times.max() <= 0.224 + 0.004 and timers.fire(56).times.min() > 0.224
    assert timers.fire(250).times.max() <= 1.032 and timers.fire(4000).times.max() <= 16.256
    assert timers.fire(8000).times.max() == pytest.approx(32 + 2.048, abs=0.04)


def test_loss_probe_fires_at_min_of_two_srtt_plus_rto_min_and_the_rto():
    # R = 20.3 ms: RTO = 20.3 + 200 ms -> 56 jiffies (224 ms) < 2 x 20.3 + 200 ms -> 61 jiffies.
    timers = model.KernelTimers()
    assert model.rto_jiffies(timers, R) == 56
    assert model.data_timeouts(timers, R)[:4] == [56, 56, 112, 224]
    assert model.data_send_times(R)[:5] == pytest.approx([0, 0.224, 0.448, 0.896, 1.792])
    # Only beyond 200 ms of RTT is 2 SRTT + rto_min the smaller: 2 x 300 + 200 = 800 ms < 300 + 600.
    assert model.data_timeouts(timers, 0.3)[0] == 200
    assert model.data_timeouts(timers, 0.15)[0] == 113  # RTO 450 ms < 500 ms


def test_data_retransmissions_give_up_by_time():
    assert model.data_give_up_s() == pytest.approx(924.6)
    sends = model.data_send_times(R)
    assert sends[-1] < 924.6 < sends[-1] + 120 and len(sends) == 17


def test_syn_schedule():
    assert model.syn_send_times() == [0, 1, 3, 7, 15, 31, 63]
    starts = [s.times.min() for s in model.LossyPath(R, 0.5).syn_sends()]
    assert starts == pytest.approx([0, 1, 3, 7, 15, 31, 63], abs=0.05)  # first grid point after the sum


# ---------------------------------------------------------------------------------------------
# The model's own consistency and the paper's formulas.


def test_no_loss_is_one_and_a_half_rtt_and_total_loss_never_connects():
    clean = model.single_path(R, 0.0)
    assert clean.accept.mean_s == pytest.approx(1.5 * R) and clean.request.median_s == pytest.approx(1.5 * R)
    assert clean.success == 1.0 and clean.request.sd_s == pytest.approx(0.0, abs=1e-12)
    dead = model.single_path(R, 1.0)
    assert dead.success == 0.0 and math.isnan(dead.accept.mean_s)


@pytest.mark.parametrize("loss", [0.2, 0.6, 0.9])
def test_both_metrics_describe_the_same_successful_attempts(loss):
    races = [model.two_path_race(R, loss, R, start2) for start2 in (0.0, 1.0)]
    for times in (model.single_path(R, loss), *races):
        assert times.accept.success == pytest.approx(times.request.success, abs=1e-9)
        assert times.accept.mean_s <= times.request.mean_s  # accept() never comes after the request


def test_race_reduces_to_the_papers_formulas():
    # SIM with a dead default path: 1.5 x RTT of path 2; TIMER: timer + 1.5 x RTT of path 2.
    assert model.two_path_race(0.04, 1.0, 0.02, 0.0).request.mean_s == pytest.approx(0.03)
    timer = model.two_path_race(0.02, 1.0, 0.02, 1.0)
    assert timer.request.mean_s == pytest.approx(1.03) and timer.success == pytest.approx(1.0)
    # Asymmetric, no loss: SIM sets up over the faster path 2 (eq. 2); TIMER over the default path.
    assert model.two_path_race(0.04, 0.0, 0.02, 0.0).accept.mean_s == pytest.approx(0.03)
    assert model.two_path_race(0.04, 0.0, 0.02, 1.0).accept.mean_s == pytest.approx(0.06)
    # Equal paths: path 1 wins the dead heat with the measured share, so it pays its loss.
    fair = model.two_path_race(R, 0.5, R, 0.0, tie_share=0.5).request.mean_s
    assert model.two_path_race(R, 0.5, R, 0.0).request.mean_s > fair
    with pytest.raises(ValueError, match="tie_share"):
        model.two_path_race(R, 0.5, R, 0.0, tie_share=1.5)


def test_bad_input():
    with pytest.raises(ValueError, match=r"loss=1\.5"):
        model.single_path(0.02, 1.5)
    with pytest.raises(ValueError, match="rtt_s=-1"):
        model.single_path(-1, 0.1)
    with pytest.raises(ValueError, match="statistic"):
        model.single_path(0.02, 0.1).request.interval(10, "mode")


def test_interval_of_a_statistic_comes_from_the_models_own_distribution():
    dist = model.single_path(R, 0.5).request
    low, high = dist.interval(30)
    assert 1.5 * R <= low < dist.mean_s < high and high - dist.mean_s > dist.mean_s - low  # heavy tail
    narrow = dist.interval(3000)
    assert low < narrow[0] < dist.mean_s < narrow[1] < high
    median_low, median_high = dist.interval(30, "median")
    assert median_low <= dist.median_s <= median_high
    assert dist.interval(30) == (low, high)  # seeded


# ---------------------------------------------------------------------------------------------
# Against the independent simulation.


def _agree(simulated, dist, label):
    success = simulated.size / N
    assert success == pytest.approx(dist.success, abs=0.01), label
    if simulated.size:
        # Heavy tails: the mean within four standard errors; the median within a timer granule.
        assert simulated.mean() == pytest.approx(dist.mean_s, abs=4 * simulated.std() / math.sqrt(simulated.size)
                                                 + 0.002), label  # fmt: skip
        assert float(np.median(simulated)) == pytest.approx(dist.median_s, abs=0.035, rel=0.02), label


N = 20_000


@pytest.mark.parametrize("loss", [0.1, 0.5, 0.8])
def test_single_path_matches_the_packet_simulation(loss):
    accepts, requests = simulate(N, loss)
    times = model.single_path(R, loss)
    _agree(accepts, times.accept, f"accept at {loss}")
    _agree(requests, times.request, f"request at {loss}")


@pytest.mark.parametrize(("loss", "start2"), [(0.5, 0.0), (0.8, 0.0), (0.5, 1.0), (0.9, 1.0)])
def test_race_matches_the_packet_simulation(loss, start2):
    accepts, requests = simulate(N, loss, "race", start2)
    times = model.two_path_race(R, loss, R, start2)
    _agree(accepts, times.accept, f"accept at {loss}, path 2 from {start2}")
    _agree(requests, times.request, f"request at {loss}, path 2 from {start2}")


# ---------------------------------------------------------------------------------------------
# Against the stored paper run.


def test_stored_paper_run_lies_within_the_model_cell_by_cell():
    metadata = json.loads((PAPER / "metadata.json").read_text())
    cells = summarise(read_runs(PAPER), metadata)
    outside, judged, names = statistics_outside(cells)
    # 44 cells x mean and median x two metrics; 2 outside (README, model section).
    assert judged == 176
    assert outside <= 4, names
