"""Reassembly delivers exactly the sent bytes under any interleaving, duplication and reinjection."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robe.protocol.reassembly import Reassembly, WindowViolationError


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
