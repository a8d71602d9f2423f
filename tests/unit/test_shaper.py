"""The per-direction link model: loss, drop-tail queue, serialisation, delay, jitter, order."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topologies.linkparams import DirectionParams
from topologies.shaper import DirectionShaper


def _shaper(**kwargs: object) -> DirectionShaper:
    return DirectionShaper(DirectionParams(**kwargs), random.Random(7))  # type: ignore[arg-type]


def test_delay_only_adds_exactly_the_delay():
    shaper = _shaper(delay_ms=10.0)
    assert shaper.offer(1500, 1.0) == pytest.approx(1.010)
    assert shaper.offer(60, 1.5) == pytest.approx(1.510)


def test_rate_serialises_back_to_back_frames():
    shaper = _shaper(delay_ms=5.0, rate_mbit=10.0)
    first = shaper.offer(1250, 0.0)  # 1250 B at 10 Mbit/s = 1 ms
    second = shaper.offer(1250, 0.0)
    assert first == pytest.approx(0.006)
    assert second == pytest.approx(0.007)
    # An idle link starts serialising at arrival, not at the end of the last frame.
    assert shaper.offer(1250, 1.0) == pytest.approx(1.006)


def test_drop_tail_queue_limits_frames_waiting_for_serialisation():
    shaper = _shaper(rate_mbit=1.0, queue_packets=3)
    dues = [shaper.offer(1250, 0.0) for _ in range(5)]  # 10 ms each
    assert [d is None for d in dues] == [False, False, False, True, True]
    assert shaper.stats.queue_dropped == 2
    # After the first frame is serialised one place is free again.
    assert shaper.offer(1250, 0.0101) is not None
    assert shaper.offer(1250, 0.0101) is None


def test_full_loss_drops_everything_and_no_loss_drops_nothing():
    lossy = _shaper(loss_pct=100.0)
    assert all(lossy.offer(100, t) is None for t in range(100))
    clean = _shaper(loss_pct=0.0)
    assert all(clean.offer(100, t) is not None for t in range(100))
    assert lossy.stats.lost == 100 and clean.stats.lost == 0


def test_loss_rate_matches_configuration_over_many_frames():
    shaper = _shaper(loss_pct=10.0)
    for i in range(20_000):
        shaper.offer(100, i * 1e-3)
    # 99.99 % binomial bound for n=20000, p=0.1 is about +-0.8 %.
    assert 9.2 < 100 * shaper.stats.lost / shaper.stats.offered < 10.8


def test_same_seed_same_losses():
    a = DirectionShaper(DirectionParams(loss_pct=30.0), random.Random("s"))
    b = DirectionShaper(DirectionParams(loss_pct=30.0), random.Random("s"))
    assert [a.offer(100, t) for t in range(200)] == [b.offer(100, t) for t in range(200)]


def test_new_parameters_apply_to_later_frames_only():
    shaper = _shaper(delay_ms=10.0)
    early = shaper.offer(100, 0.0)
    shaper.set_params(DirectionParams(delay_ms=1.0))
    late = shaper.offer(100, 0.001)
    assert early == pytest.approx(0.010)
    # The shorter delay would let the later frame overtake; a wire keeps order.
    assert late == pytest.approx(0.010)
    assert shaper.offer(100, 0.5) == pytest.approx(0.501)


frames = st.lists(
    st.tuples(st.integers(min_value=42, max_value=9000), st.floats(min_value=0, max_value=0.05)),
    min_size=1,
    max_size=200,
)
params = st.builds(
    DirectionParams,
    delay_ms=st.floats(min_value=0, max_value=100),
    jitter_ms=st.floats(min_value=0, max_value=10),
    loss_pct=st.floats(min_value=0, max_value=100),
    rate_mbit=st.one_of(st.none(), st.floats(min_value=0.1, max_value=1000)),
    queue_packets=st.integers(min_value=1, max_value=50),
)


@settings(max_examples=300, deadline=None)
@given(params, frames, st.integers())
def test_properties_order_causality_accounting(p, offers, seed):
    shaper = DirectionShaper(p, random.Random(seed))
    now, last = 0.0, 0.0
    for size, gap in offers:
        now += gap
        due = shaper.offer(size, now)
        if due is None:
            continue
        # Never earlier than arrival + delay + serialisation; never before an earlier frame.
        serialisation = 0.0 if p.rate_mbit is None else size * 8 / (p.rate_mbit * 1e6)
        assert due >= now + p.delay_ms / 1000 + serialisation - 1e-9
        assert due >= last
        last = due
    s = shaper.stats
    assert s.offered == len(offers) == s.lost + s.queue_dropped + s.accepted
    if p.rate_mbit is None:
        assert s.queue_dropped == 0
