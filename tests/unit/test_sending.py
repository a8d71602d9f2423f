"""Send buffer, reinjection and scheduler: every byte is delivered although subflows die."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robe.protocol.reassembly import Reassembly
from robe.protocol.sending import SendBuffer, SubflowView, lowest_rtt_first


def test_scheduler_picks_the_fastest_usable_subflow():
    flows = [SubflowView(1, True, True, 40_000), SubflowView(2, True, True, 20_000), SubflowView(3, False, True, 1)]
    assert lowest_rtt_first(flows) == 2
    assert lowest_rtt_first([SubflowView(2, True, False, 20_000), flows[0]]) == 1
    assert lowest_rtt_first([flows[2]]) is None


def test_backpressure_and_acks():
    buf = SendBuffer(acked_dsn=1000, limit=10)
    assert buf.write(b"0123456789abc") == 10 and buf.space == 0
    assert buf.next_chunk(1, 4) == (1000, b"0123")
    assert buf.ack(1004) == 4 and buf.space == 4
    with pytest.raises(ValueError, match="never sent"):
        buf.ack(1005)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=1, max_size=5000),
    st.lists(
        st.tuples(st.sampled_from(["send", "deliver", "lose", "kill", "ack"]), st.integers(0, 2), st.integers(1, 700)),
        max_size=200,
    ),
)
def test_everything_arrives_exactly_once_in_order_while_subflows_die(data, script):
    """Three subflows; frames in flight may be delivered or lost; a subflow may die (its unacked
    data is reinjected); subflow 0 never dies for good, so the stream must complete."""
    buf = SendBuffer(acked_dsn=7, limit=len(data))
    assert buf.write(data) == len(data)
    receiver = Reassembly(next_dsn=7, window=len(data))
    wire: dict[int, list[tuple[int, bytes]]] = {0: [], 1: [], 2: []}
    out = bytearray()

    def step(action, sid, size):
        if action == "send":
            chunk = buf.next_chunk(sid, size)
            if chunk:
                wire[sid].append(chunk)
        elif action == "deliver" and wire[sid]:
            out.extend(receiver.add(*wire[sid].pop(0)))
        elif action == "lose" and wire[sid] and sid != 0:
            wire[sid].pop(0)  # lost for good: only a subflow death brings it back
        elif action == "kill" and sid != 0:
            wire[sid].clear()
            buf.subflow_died(sid)
        elif action == "ack":
            buf.ack(receiver.next_dsn)

    for action, sid, size in script:
        step(action, sid, size)
    # Then the network heals: kill the lossy subflows, carry the rest on subflow 0.
    for sid in (1, 2):
        wire[sid].clear()
        buf.subflow_died(sid)
    for _ in range(len(data) + 10):
        step("send", 0, 1000)
        step("deliver", 0, 0)
        step("ack", 0, 0)
        if buf.acked_dsn == buf.end_dsn and not wire[0]:
            break
    assert bytes(out) == data
    assert buf.acked_dsn == 7 + len(data) and not buf.has_pending()


def test_kernel_default_keeps_idle_traffic_on_the_first_subflow_and_spills_by_linger_time():
    from robe.protocol.sending import SCHEDULERS, kernel_default

    lte, dsl = SubflowView(1, True, True, 40_000), SubflowView(2, True, True, 20_000)
    # Idle: ties on a linger time of 0, the first in list order wins even though it is slower.
    assert kernel_default([lte, dsl]) == 1
    assert kernel_default([dsl, lte]) == 2
    # Busy first subflow: the one that would drain first (queued x RTT) is taken.
    busy = SubflowView(1, True, True, 40_000, queued=3000)
    assert kernel_default([busy, dsl]) == 2
    assert kernel_default([busy, SubflowView(2, True, True, 20_000, queued=7000)]) == 1
    assert kernel_default([SubflowView(1, False, True, 1), dsl]) == 2 and kernel_default([]) is None
    assert set(SCHEDULERS) == {"lowest-rtt", "kernel-default"}


def test_in_flight_bytes_follow_sends_and_acks():
    buffer = SendBuffer(acked_dsn=100, limit=1000)
    buffer.write(b"x" * 300)
    buffer.next_chunk(1, 200)
    buffer.next_chunk(2, 200)
    assert (buffer.in_flight(1), buffer.in_flight(2), buffer.in_flight(3)) == (200, 100, 0)
    buffer.ack(300)
    assert (buffer.in_flight(1), buffer.in_flight(2)) == (0, 100)
