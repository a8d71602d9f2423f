"""Reassembly delivers exactly the sent bytes under any interleaving, duplication and reinjection."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robe.protocol.reassembly import Reassembly, TooFragmentedError, WindowViolationError


@st.composite
def deliveries(draw):
    """A byte stream cut into segments, then delivered shuffled, some twice (reinjection after a
    subflow died), some re-cut differently on the second path."""
    data = draw(st.binary(min_size=1, max_size=3000))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=30)))
    bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
    segments = [(a, data[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    duplicates = draw(st.lists(st.sampled_from(segments), max_size=10))
    overlapping = [
        (a, data[a:b])
        for a, b in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 500)), max_size=5))
        for b in [min(len(data), a + b)]
    ]
    order = draw(st.permutations(segments + duplicates + overlapping))
    return data, order


@settings(max_examples=400, deadline=None)
@given(deliveries(), st.integers(0, 2**63))
def test_exactly_the_sent_bytes_come_out_in_order(case, base):
    data, order = case
    stream = Reassembly(next_dsn=base, window=len(data))
    out = b"".join(stream.add(base + offset, chunk) for offset, chunk in order)
    assert out == data
    assert stream.buffered == 0 and stream.next_dsn == base + len(data)


def test_memory_is_bounded_by_the_window():
    stream = Reassembly(next_dsn=0, window=100)
    assert stream.add(50, b"x" * 50) == b""
    assert stream.buffered == 50
    with pytest.raises(WindowViolationError, match="beyond the window"):
        stream.add(90, b"y" * 11)
    assert stream.add(0, b"z" * 50) == b"z" * 50 + b"x" * 50


def test_bad_construction():
    with pytest.raises(ValueError, match="next_dsn"):
        Reassembly(next_dsn=-1, window=1)
    with pytest.raises(ValueError, match="window"):
        Reassembly(next_dsn=0, window=0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(1, 40)), max_size=80), st.integers(0, 2**63))
def test_segments_stay_disjoint_sorted_and_exactly_what_was_sent(writes, base):
    data = bytes(range(256)) * 2
    stream = Reassembly(next_dsn=base, window=len(data), max_segments=0)
    delivered = bytearray()
    seen: set[int] = set()
    for offset, length in writes:
        chunk = data[offset : offset + length]
        delivered += stream.add(base + offset, chunk)
        seen.update(range(offset, offset + len(chunk)))
        # What came out is the sent prefix; what is held lies after it, disjoint and in order.
        assert bytes(delivered) == data[: len(delivered)]
        assert stream.next_dsn == base + len(delivered)
        held = list(stream._segments.items())
        assert all(a + len(x) <= b for (a, x), (b, _) in itertools.pairwise(held))
        assert all(bytes(x) == data[a - base : a - base + len(x)] for a, x in held)
        assert stream.buffered == sum(len(x) for _, x in held)
        assert set(range(len(delivered))) | {a - base + i for a, x in held for i in range(len(x))} == seen


def test_a_run_of_small_in_order_frames_stays_one_segment():
    # Two subflows' runs, each cut into 100-byte frames, interleaved, the head missing.
    stream = Reassembly(next_dsn=0, window=1 << 20)
    for k in range(200):
        stream.add(1000 + 100 * k, b"a" * 100)
        stream.add(50_000 + 100 * k, b"b" * 100)
    assert stream.segments == 2 and stream.buffered == 40_000
    assert len(stream.add(0, b"h" * 1000)) == 1000 + 20_000


def test_tiny_segments_with_gaps_beyond_the_bound_are_refused_but_the_head_is_always_taken():
    stream = Reassembly(next_dsn=0, window=1 << 20)
    assert stream.max_segments == (1 << 20) // 256
    for k in range(stream.max_segments):
        stream.add(2 * k + 1, b"x")
    with pytest.raises(TooFragmentedError, match="4096 out-of-order segments held"):
        stream.add(2 * stream.max_segments + 1, b"x")
    assert stream.segments == 4096  # nothing stored by the refused segment
    assert stream.add(1, b"y") == b""  # inside a held segment: a duplicate, not a new segment
    assert stream.add(0, b"h") == b"hx"  # the head is delivered at once, even at the bound
    assert stream.segments == 4095


def test_highest_end_covers_held_data():
    stream = Reassembly(next_dsn=10, window=100)
    assert stream.highest_end == 10
    stream.add(50, b"abc")
    assert stream.highest_end == 53
