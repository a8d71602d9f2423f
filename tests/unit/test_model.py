"""The analytic set-up time model against hand values and an independent Monte Carlo of the same process."""

import itertools
import math
import random

import pytest

from analysis.model import (
    data_retransmit_delays,
    single_path,
    syn_send_times,
)


def test_no_loss_is_one_and_a_half_rtt():
    e = single_path(0.02, 0.0)
    assert e.mean_s == pytest.approx(0.03) and e.sd_s == pytest.approx(0.0, abs=1e-9) and e.success == 1.0


def test_total_loss_never_connects():
    e = single_path(0.02, 1.0)
    assert e.success == 0.0 and math.isnan(e.mean_s)


def test_linux_syn_schedule_and_data_rto():
    assert syn_send_times() == [0, 1, 3, 7, 15, 31, 63]
    # Tail loss probe after 1.5 * 20 ms + 200 ms = 230 ms, then the RTO, 20 + max(40, 200) = 220 ms,
    # doubling (measured on this kernel: requests arriving 225 and 454 ms late).
    assert data_retransmit_delays(0.02)[:5] == pytest.approx([0, 0.23, 0.45, 0.89, 1.77])


def test_mean_grows_with_loss():
    means = [single_path(0.02, p / 10).mean_s for p in range(10)]
    assert all(a < b for a, b in itertools.pairwise(means))


@pytest.mark.parametrize("loss", [0.1, 0.3, 0.5])
def test_matches_monte_carlo_of_the_same_process(loss):
    rng = random.Random(42)
    syn, data = syn_send_times(), data_retransmit_delays(0.02)
    samples = []
    for _ in range(200_000):
        k = next((i for i in range(len(syn)) if rng.random() >= loss), None)
        j = next((i for i in range(len(data)) if rng.random() >= loss), None)
        if k is not None and j is not None:
            samples.append(syn[k] + 0.02 + data[j] + 0.01)
    e = single_path(0.02, loss)
    mc_mean = sum(samples) / len(samples)
    assert len(samples) / 200_000 == pytest.approx(e.success, abs=0.01)
    assert mc_mean == pytest.approx(e.mean_s, rel=0.08)


def test_interval_shrinks_with_n():
    e = single_path(0.02, 0.3)
    low10, high10 = e.interval(10)
    low100, high100 = e.interval(100)
    assert low10 < low100 < e.mean_s < high100 < high10


def test_bad_input():
    with pytest.raises(ValueError, match=r"loss=1\.5"):
        single_path(0.02, 1.5)
    with pytest.raises(ValueError, match="rtt_s=-1"):
        single_path(-1, 0.1)


def test_race_reduces_to_the_papers_formulas():
    from analysis.model import two_path_race

    # SIM without loss: 1.5 x RTT whichever path wins the dead heat.
    assert two_path_race(0.02, 0.0, 0.02, 0.0).mean_s == pytest.approx(0.03)
    # SIM with a dead default path: 1.5 x RTT of path 2; TIMER: timer + 1.5 x RTT of path 2.
    assert two_path_race(0.04, 1.0, 0.02, 0.0).mean_s == pytest.approx(0.03)
    timer = two_path_race(0.02, 1.0, 0.02, 1.0)
    assert timer.mean_s == pytest.approx(1.03) and timer.success == pytest.approx(1.0)
    # Asymmetric, no loss: SIM sets up over the faster path 2 (eq. 2).
    assert two_path_race(0.04, 0.0, 0.02, 0.0).mean_s == pytest.approx(0.03)


def test_race_matches_a_monte_carlo_of_the_same_process():
    from analysis.model import two_path_race

    rng = random.Random(5)
    loss, r, timer = 0.4, 0.02, 1.0
    syn, data = syn_send_times(), data_retransmit_delays(r)
    samples = []
    for _ in range(100_000):
        k = next((i for i in range(len(syn)) if rng.random() >= loss), None)
        back1 = None if k is None else syn[k] + r
        back2 = timer + r
        if back1 is not None and (back1 < back2 or (back1 == back2 and rng.random() < 0.5)):
            j = next((i for i in range(len(data)) if rng.random() >= loss), None)
            if j is None:
                continue
            samples.append(back1 + data[j] + 0.5 * r)
        else:
            samples.append(back2 + 0.5 * r)
    expected = two_path_race(r, loss, r, timer)
    # The data back-off makes the tail heavy: allow four standard errors of the sample mean.
    assert sum(samples) / len(samples) == pytest.approx(expected.mean_s, abs=4 * expected.sd_s / len(samples) ** 0.5)


def test_interval_of_the_mean_comes_from_the_models_own_distribution():
    e = single_path(0.02, 0.5)
    low, high = e.interval(30)
    # Heavy tail: the interval is skewed and, unlike a normal approximation, never below the minimum.
    assert 0.03 <= low < e.mean_s < high
    assert high - e.mean_s > e.mean_s - low
    narrow = e.interval(3000)
    assert narrow[0] > low and narrow[1] < high
    assert sum(w for w, _ in e.outcomes) == pytest.approx(e.success)
