"""The userspace RobE state machines against each other through an in-memory network of subflows."""

import collections
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robe.protocol import crypto
from robe.protocol.connection import (
    ClientConnection,
    CloseSubflow,
    ConnectionReleased,
    DataReceived,
    Established,
    OpenSubflow,
    Server,
    ServerConnection,
    StreamEnded,
    SubflowFailed,
    SubflowReady,
    Superseded,
    Transmit,
    expand,
)
from robe.protocol.frames import (
    Cap,
    CapAttach,
    Data,
    DataAck,
    DataFin,
    Decoder,
    Join,
    JoinCap,
    JoinFin,
    ResetReason,
    Rst,
)


class Net:
    """Subflows as in-order byte pipes; paths can be dead; every step is explicit."""

    def __init__(self, client: ClientConnection, server: Server, dead_paths=()):
        self.client, self.server = client, server
        self.dead = set(dead_paths)
        self.sid = 0
        self.path_of: dict[int, int] = {}
        self.pipes: collections.deque[tuple[str, int, bytes]] = collections.deque()
        self.connects: collections.deque[tuple[int, int]] = collections.deque()
        self.client_events: list[object] = []
        self.server_events: list[object] = []
        self.server_conn: ServerConnection | None = None
        self.received = {"client": bytearray(), "server": bytearray()}
        self.closed: set[int] = set()

    def from_client(self, outputs):
        for o in outputs:
            if isinstance(o, Transmit):
                if o.sid not in self.closed:
                    self.pipes.append(("c2s", o.sid, o.data))
            elif isinstance(o, OpenSubflow):
                if o.path not in self.dead:
                    self.sid += 1
                    self.path_of[self.sid] = o.path
                    self.server.subflow_accepted(self.sid)
                    self.connects.append((self.sid, o.path))
            elif isinstance(o, CloseSubflow):
                self.closed.add(o.sid)
                self.from_server(self.server.subflow_closed(o.sid))
            else:
                self.client_events.append(o)
                if isinstance(o, DataReceived):
                    self.received["client"] += o.data

    def from_server(self, outputs):
        for o in outputs:
            if isinstance(o, Transmit):
                if o.sid not in self.closed:
                    self.pipes.append(("s2c", o.sid, o.data))
            elif isinstance(o, CloseSubflow):
                self.closed.add(o.sid)
                self.from_client(self.client.subflow_closed(o.sid))
            else:
                self.server_events.append(o)
                if isinstance(o, DataReceived):
                    self.received["server"] += o.data

    def run(self, steps=100_000):
        for _ in range(steps):
            if self.connects:
                sid, path = self.connects.popleft()
                self.from_client(self.client.subflow_connected(sid, path))
            elif self.pipes:
                direction, sid, data = self.pipes.popleft()
                if sid in self.closed:
                    continue
                if direction == "c2s":
                    conn, out = self.server.receive(sid, data)
                    self.server_conn = self.server_conn or conn
                    self.from_server(out)
                else:
                    self.from_client(self.client.receive(sid, data))
            else:
                return
        raise AssertionError("network did not settle")

    def kill_path(self, path):
        for sid, p in list(self.path_of.items()):  # the client may open a join on the path meanwhile
            if p == path and sid not in self.closed:
                self.closed.add(sid)
                self.from_client(self.client.subflow_closed(sid))
                self.from_server(self.server.subflow_closed(sid))


def _connect(strategy, dead_paths=(), robe=True, paths=2):
    net = Net(ClientConnection(strategy=strategy, paths=paths), Server(robe=robe), dead_paths)
    net.from_client(net.client.start())
    return net


@pytest.mark.parametrize("strategy", ["mptcp-user", "robe-downgrade", "robe-bbm", "robe-esim"])
def test_handshake_then_both_paths_carry_data_both_ways(strategy):
    net = _connect(strategy)
    net.client.write(b"GET /\n")
    net.from_client(net.client.pump())
    net.run()
    assert [type(e) for e in net.client_events][:1] == [Established]
    assert net.received["server"] == b"GET /\n"
    ready_client = {e.path for e in net.client_events if isinstance(e, SubflowReady)}
    ready_server = {e.path for e in net.server_events if isinstance(e, SubflowReady)}
    assert ready_client == ready_server == {0, 1}
    conn = net.server_conn
    assert conn is not None and conn.key_a == net.client.key_a and net.client.key_b == conn.key_b
    payload = random.Random(1).randbytes(300_000)
    conn.write(payload)
    net.from_server(conn.pump())
    net.run()
    assert bytes(net.received["client"]) == payload
    if strategy == "robe-downgrade":
        assert not [e for e in net.server_events if isinstance(e, SubflowFailed)]
    if strategy == "robe-bbm":
        assert net.client.losers  # one potentially initial attempt lost and joined later


def _bytes(outputs):
    return b"".join(o.data for o in outputs if isinstance(o, Transmit))


def test_mptcp_user_joins_only_after_the_first_data_ack_and_sends_only_after_the_fourth_ack():
    client = ClientConnection(strategy="mptcp-user", paths=2)
    opens = client.start()
    assert opens == [OpenSubflow(0, initial=True)]
    out = client.subflow_connected(1, 0)
    assert not any(isinstance(o, OpenSubflow) for o in out)  # no join before the CAP_ACK
    server = Server()
    server.subflow_accepted(1)
    _, answer = server.receive(1, b"".join(o.data for o in out if isinstance(o, Transmit)))
    joins = client.receive(1, b"".join(o.data for o in answer if isinstance(o, Transmit)))
    assert OpenSubflow(1) in joins
    out = client.subflow_connected(2, 1)
    assert [type(o) for o in out] == [Transmit]  # JOIN only
    server.subflow_accepted(2)
    _, join_ack = server.receive(2, _bytes(out))
    fin = client.receive(2, _bytes(join_ack))
    assert not any(isinstance(o, SubflowReady) for o in fin)  # JOIN_FIN sent, not ready yet
    _, fourth = server.receive(2, _bytes(fin))
    ready = client.receive(2, next(o.data for o in fourth if isinstance(o, Transmit)))
    assert SubflowReady(2, 1) in ready


def test_dead_default_path_downgrade_sets_up_on_path_2_and_classic_never_does():
    robe = _connect("robe-downgrade", dead_paths={0})
    robe.client.write(b"x")
    robe.from_client(robe.client.pump())
    robe.run()
    assert robe.received["server"] == b"x"
    assert next(e for e in robe.client_events if isinstance(e, Established)).path == 1
    classic = _connect("mptcp-user", dead_paths={0})
    classic.run()
    assert not classic.client_events


def test_a_subflow_dying_mid_transfer_loses_nothing():
    net = _connect("robe-downgrade")
    net.run()
    payload = random.Random(2).randbytes(200_000)
    net.client.write(payload)
    net.from_client(net.client.pump())
    # Deliver part of it, then kill path 0 with frames still in its pipe.
    for _ in range(5):
        direction, sid, data = net.pipes.popleft()
        net.from_server(net.server.receive(sid, data)[1]) if direction == "c2s" else net.from_client(
            net.client.receive(sid, data)
        )
    net.kill_path(0)
    net.from_client(net.client.pump())
    net.run()
    assert hashlib.sha256(net.received["server"]).digest() == hashlib.sha256(payload).digest()


def test_orderly_close_ends_the_stream():
    net = _connect("mptcp-user")
    net.client.write(b"bye")
    net.client.close()
    net.from_client(net.client.pump())
    net.run()
    assert net.received["server"] == b"bye" and StreamEnded() in net.server_events


def _server_with_connection():
    server = Server(max_subflows=2)
    server.subflow_accepted(1)
    key_a = crypto.new_key()
    conn, _ = server.receive(1, Cap(1, 0, key_a).encode())
    return server, conn, key_a


@pytest.mark.parametrize(
    ("first_bytes", "reason"),
    [
        (Join(0xDEADBEEF, 1, 1).encode(), ResetReason.UNKNOWN_TOKEN),
        (Data(5, b"x").encode(), ResetReason.OUT_OF_STATE),
        (b"\xff" * 8, ResetReason.MALFORMED),
        (Cap(9, 1, 5).encode(), ResetReason.MALFORMED),
    ],
)
def test_hostile_first_frames_are_reset_with_a_reason(first_bytes, reason):
    server, _, _ = _server_with_connection()
    server.subflow_accepted(2)
    conn, out = server.receive(2, first_bytes)
    assert conn is None
    failed = [o for o in out if isinstance(o, SubflowFailed)]
    assert failed and failed[0].reason is reason and CloseSubflow(2, reason) in out


def test_bad_join_hmac_limits_and_classic_peers():
    server, conn, key_a = _server_with_connection()
    server.subflow_accepted(2)
    _, out = server.receive(2, Join(conn.token, 7, 1).encode())
    _, out = server.receive(2, JoinFin(b"\x00" * 20).encode())
    assert any(isinstance(o, SubflowFailed) and o.reason is ResetReason.BAD_HMAC for o in out)
    # Subflow limit (2): the initial plus one more; a third is refused.
    for sid, path in ((3, 1), (4, 2)):
        server.subflow_accepted(sid)
        _, out = server.receive(sid, CapAttach(path, key_a, crypto.attach_hmac(key_a, conn.key_b, path)).encode())
    assert any(isinstance(o, SubflowFailed) and o.reason is ResetReason.TOO_MANY_SUBFLOWS for o in out)
    classic = Server(robe=False)
    classic.subflow_accepted(1)
    classic.receive(1, Cap(1, 0, key_a).encode())
    classic.subflow_accepted(2)
    _, out = classic.receive(2, CapAttach(1, key_a, b"\x00" * 16).encode())
    assert any(isinstance(o, SubflowFailed) and o.reason is ResetReason.NO_ROBE for o in out)


def test_downgrade_attaches_only_with_the_proof_of_key_b():
    server, conn, key_a = _server_with_connection()
    # Knowing (or guessing) Key-A is not enough: a bare CAP or a wrong proof is reset.
    attempts = [
        (Cap(1, 1, key_a).encode(), ResetReason.BAD_HMAC),
        (CapAttach(1, key_a, crypto.attach_hmac(key_a, conn.key_b ^ 1, 1)).encode(), ResetReason.BAD_HMAC),
        (CapAttach(1, key_a, crypto.attach_hmac(key_a, conn.key_b, 2)).encode(), ResetReason.BAD_HMAC),
        (CapAttach(1, key_a ^ 1, crypto.attach_hmac(key_a, conn.key_b, 1)).encode(), ResetReason.UNKNOWN_TOKEN),
    ]
    for sid, (first, reason) in enumerate(attempts, start=10):
        server.subflow_accepted(sid)
        owner, out = server.receive(sid, first)
        assert owner is None and [o.reason for o in out if isinstance(o, SubflowFailed)] == [reason]
    assert len(conn.subflows) == 1
    server.subflow_accepted(20)
    owner, out = server.receive(20, CapAttach(1, key_a, crypto.attach_hmac(key_a, conn.key_b, 1)).encode())
    assert owner is conn and SubflowReady(20, 1) in out and len(conn.subflows) == 2


def test_downgrade_later_subflow_waits_for_key_b_then_attaches_at_once():
    client = ClientConnection(strategy="robe-downgrade", paths=2)
    assert client.start() == [OpenSubflow(0, initial=True), OpenSubflow(1, initial=True)]
    first = client.subflow_connected(1, 1)  # path 1 wins
    assert Established(1, 1) in first
    assert client.subflow_connected(2, 0) == []  # Key-B unknown: nothing to prove yet
    server = Server()
    server.subflow_accepted(1)
    _, answer = server.receive(1, _bytes(first))
    out = client.receive(1, _bytes(answer))
    attach = [o for o in out if isinstance(o, Transmit) and o.sid == 2]
    assert SubflowReady(2, 0) in out and attach
    server.subflow_accepted(2)
    conn, ready = server.receive(2, attach[0].data)
    assert conn is not None and SubflowReady(2, 0) in ready
    # Once Key-B is known, a later subflow attaches at once.
    late = ClientConnection(strategy="robe-downgrade", paths=3)
    late.start()
    opening = late.subflow_connected(1, 0)
    server.subflow_accepted(5)
    _, answer = server.receive(5, _bytes(opening))
    late.receive(1, _bytes(answer))
    out = late.subflow_connected(2, 2)
    assert SubflowReady(2, 2) in out and isinstance(_first_frame(_bytes(out)), CapAttach)


def _first_frame(data):
    decoder = Decoder()
    decoder.feed(data)
    return next(iter(decoder.frames()))


def test_sequence_numbers_wrap_on_the_wire():
    assert expand(5, (1 << 64) - 10) == (1 << 64) + 5
    assert expand((1 << 64) - 3, 2) == -3  # just behind the reference
    assert expand(100, 90) == 100


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 3),
            st.one_of(
                st.binary(max_size=64),
                st.builds(lambda k, p: Cap(1, p, k).encode(), st.sampled_from([1, 2, 2**63]), st.integers(0, 3)),
                st.builds(lambda t, n: Join(t, n, 1).encode(), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                st.builds(lambda d, b: Data(d, b).encode(), st.integers(0, 2**64 - 1), st.binary(max_size=100)),
                st.builds(lambda h: JoinFin(h).encode(), st.binary(min_size=20, max_size=20)),
                st.builds(lambda a: DataAck(a, 10).encode(), st.integers(0, 2**64 - 1)),
                st.builds(lambda d: DataFin(d).encode(), st.integers(0, 2**64 - 1)),
                st.just(b"closed"),
            ),
        ),
        max_size=40,
    )
)
def test_server_survives_any_sequence_of_frames_and_releases_every_connection(script):
    server = Server(window=4096)
    accepted: set[int] = set()
    released: set[int] = set()
    for sid, blob in script:
        if sid not in accepted:
            server.subflow_accepted(sid)
            accepted.add(sid)
        if blob == b"closed":
            out = server.subflow_closed(sid)
            accepted.discard(sid)
        else:
            _, out = server.receive(sid, blob)  # never raises
        assert all(isinstance(o, (Transmit, CloseSubflow, Established, SubflowReady, DataReceived, StreamEnded,
                                  SubflowFailed, Superseded, ConnectionReleased)) for o in out)  # fmt: skip
        released |= {o.key_a for o in out if isinstance(o, ConnectionReleased)}
        _assert_nothing_outlives_its_subflows(server)
    for conn in server.connections.values():
        assert conn.recv is not None and conn.recv.buffered <= 4096
    for sid in accepted:  # every TCP connection ends: nothing may stay behind
        released |= {o.key_a for o in server.subflow_closed(sid) if isinstance(o, ConnectionReleased)}
    assert not server.connections and not server.by_token and not server.owner and not server.unclassified
    assert not released & set(server.connections)


def _assert_nothing_outlives_its_subflows(server):
    """Every known connection has a subflow, every subflow's owner is a known connection, tokens match."""
    for key_a, conn in server.connections.items():
        assert conn.subflows and conn.key_a == key_a and server.by_token.get(conn.token) is conn
    assert len(server.by_token) == len(server.connections)
    for sid, conn in server.owner.items():
        assert server.connections.get(conn.key_a) is conn and sid in conn.subflows


@pytest.mark.parametrize("ending", ["rst", "garbage", "bad data", "close"])
def test_a_connection_whose_last_subflow_is_reset_is_released(ending):
    server = Server()
    for i in range(1000):
        sid, key_a = i + 1, 10_000 + i
        server.subflow_accepted(sid)
        _, out = server.receive(sid, Cap(1, 0, key_a).encode())
        assert any(isinstance(o, Established) for o in out)
        if ending == "rst":
            _, out = server.receive(sid, Rst(ResetReason.UNSPECIFIED).encode())
        elif ending == "garbage":
            _, out = server.receive(sid, b"\xff" * 8)
        elif ending == "bad data":  # a protocol violation: data far beyond the window
            _, out = server.receive(sid, Data((crypto.idsn(key_a) + (1 << 30)) % (1 << 64), b"x").encode())
        if ending != "close":
            assert ConnectionReleased(key_a, False) in out
        server.subflow_closed(sid)
    assert (len(server.connections), len(server.by_token), len(server.owner)) == (0, 0, 0)


def test_esim_recycles_the_loser_and_rejects_a_forged_proof():
    net = _connect("robe-esim")
    net.client.write(b"hi")
    net.from_client(net.client.pump())
    net.run()
    assert net.received["server"] == b"hi"
    assert any(isinstance(e, Superseded) for e in net.server_events)
    assert len(net.server.connections) == 1  # the losing attempt's connection is gone
    # A JOIN_CAP whose proof does not verify is reset.
    server, _, key_a = _server_with_connection()
    server.subflow_accepted(2)
    server.receive(2, Cap(1, 1, crypto.new_key()).encode())
    _, out = server.receive(2, JoinCap(1, key_a, b"\x00" * 16).encode())
    assert any(isinstance(o, SubflowFailed) and o.reason is ResetReason.BAD_HMAC for o in out)
    server.subflow_accepted(3)
    server.receive(3, Cap(1, 2, crypto.new_key()).encode())
    _, out = server.receive(3, JoinCap(2, crypto.new_key(), b"\x00" * 16).encode())
    assert any(isinstance(o, SubflowFailed) and o.reason is ResetReason.UNKNOWN_TOKEN for o in out)


def _data(key_a: int, offset: int, payload: bytes) -> bytes:
    return Data((crypto.idsn(key_a) + offset) % (1 << 64), payload).encode()


def test_tiny_out_of_order_segments_reset_the_subflow_with_a_reason_and_bounded_memory():
    server, conn, key_a = _server_with_connection()
    assert conn is not None and conn.recv is not None
    failed = []
    for k in range(5000):  # one byte at every other sequence number: a hole before each
        _, out = server.receive(1, _data(key_a, 2 * k + 1, b"x"))
        failed += [o for o in out if isinstance(o, SubflowFailed)]
        if failed:
            break
    assert failed[0].reason is ResetReason.FRAGMENTED and k == conn.recv.max_segments
    assert conn.recv.segments <= conn.recv.max_segments
    assert ConnectionReleased(key_a, False) in out and not server.connections


def test_data_after_the_data_fin_is_refused_and_never_delivered():
    server, _, key_a = _server_with_connection()
    _, out = server.receive(1, _data(key_a, 0, b"hello") + DataFin((crypto.idsn(key_a) + 5) % (1 << 64)).encode())
    assert DataReceived(b"hello") in out and StreamEnded() in out
    _, out = server.receive(1, _data(key_a, 5, b"more"))
    assert not [o for o in out if isinstance(o, DataReceived)]
    assert any(isinstance(o, SubflowFailed) and o.reason is ResetReason.MALFORMED and "after the DATA_FIN" in o.detail
               for o in out)  # fmt: skip


def test_a_data_fin_before_data_already_received_or_moved_is_refused():
    server, _, key_a = _server_with_connection()
    server.receive(1, _data(key_a, 10, b"later"))  # held out of order up to offset 15
    _, out = server.receive(1, DataFin((crypto.idsn(key_a) + 12) % (1 << 64)).encode())
    assert any(isinstance(o, SubflowFailed) and "before data already received" in o.detail for o in out)
    server, _, key_a = _server_with_connection()
    server.receive(1, DataFin((crypto.idsn(key_a) + 20) % (1 << 64)).encode())
    server.receive(1, DataFin((crypto.idsn(key_a) + 20) % (1 << 64)).encode())  # re-sent: fine
    assert server.connections
    _, out = server.receive(1, DataFin((crypto.idsn(key_a) + 30) % (1 << 64)).encode())
    assert any(isinstance(o, SubflowFailed) and "DATA_FIN moved" in o.detail for o in out)


def _finished_pair(join_reaches_server_first: bool = False):
    """A client and a server connection that exchanged a request and an answer and both DATA_FINs
    (everything acknowledged), while the client's join on path 1 was under way: its JOIN still in
    flight, or (``join_reaches_server_first``) already answered, the JOIN_ACK in flight."""
    client = ClientConnection(strategy="mptcp-user", paths=2)
    client.write(b"request")
    client.start()
    server = Server()
    server.subflow_accepted(1)
    conn, answer = server.receive(1, _bytes(client.subflow_connected(1, 0)))
    assert conn is not None and OpenSubflow(1) in client.receive(1, _bytes(answer))
    in_flight = _bytes(client.subflow_connected(2, 1))  # the JOIN
    if join_reaches_server_first:
        server.subflow_accepted(2)
        _, join_ack = server.receive(2, in_flight)
        in_flight = _bytes(join_ack)
    client.close()
    _, out = server.receive(1, _bytes(client.pump()))
    assert StreamEnded() in out
    conn.write(b"answer")
    conn.close()
    back = client.receive(1, _bytes(conn.pump()))
    server.receive(1, _bytes(back))  # the client's data-ack of the answer
    return client, server, conn, in_flight


def test_a_join_to_a_finished_or_abandoned_server_connection_is_refused():
    # The soak's leak: a join crossing the close became ready after both ends had closed, and
    # nobody ever closed it (the application had let go). Now the server refuses it.
    _, server, conn, join = _finished_pair()
    server.subflow_accepted(2)
    joined, out = server.receive(2, join)
    assert joined is None and any(isinstance(o, CloseSubflow) and o.sid == 2 for o in out)
    assert set(conn.subflows) == {1} and conn.finished and CloseSubflow(2, ResetReason.CLOSED) in out
    # Abandoned by the application before it finished: a JOIN in its handshake is reset and released.
    server, conn, key_a = _server_with_connection()
    server.subflow_accepted(2)
    server.receive(2, Join(conn.token, 7, 1).encode())
    assert 2 in conn.subflows and server.owner[2] is conn
    out = server.abandon(conn)
    assert CloseSubflow(2, ResetReason.CLOSED) in out and 2 not in server.owner and set(conn.subflows) == {1}
    server.subflow_accepted(3)
    _, out = server.receive(3, CapAttach(1, key_a, crypto.attach_hmac(key_a, conn.key_b, 1)).encode())
    assert CloseSubflow(3, ResetReason.CLOSED) in out
    assert ConnectionReleased(key_a, False) in server.subflow_closed(1) and not server.connections


def test_a_client_join_that_completes_after_the_close_is_reset():
    client, _, _, join_ack = _finished_pair(join_reaches_server_first=True)
    out = client.receive(2, join_ack)
    assert 2 not in client.subflows and any(isinstance(o, CloseSubflow) and o.sid == 2 for o in out)
    assert client.finished and CloseSubflow(2, ResetReason.CLOSED) in out
    # Abandoned (closed by the application) before it finished: a join in its handshake is reset,
    # one that connects later is closed at once.
    client = ClientConnection(strategy="mptcp-user", paths=2)
    client.start()
    server = Server()
    server.subflow_accepted(1)
    _, answer = server.receive(1, _bytes(client.subflow_connected(1, 0)))
    assert OpenSubflow(1) in client.receive(1, _bytes(answer))
    client.subflow_connected(2, 1)
    out = client.abandon()
    assert CloseSubflow(2, ResetReason.CLOSED) in out and set(client.subflows) == {1}
    assert client.subflow_connected(3, 1) == [CloseSubflow(3, ResetReason.CLOSED)]


def test_a_read_of_thousands_of_tiny_frames_is_handled_in_bounded_slices():
    # One read of one-byte DATA frames (in order: nothing is held, no bound trips) used to be
    # handled in one call: 20,000 frames stalled the event loop for ~100 ms. Now each call takes
    # FRAMES_PER_CALL frames at most and says whether more wait.
    from robe.protocol import connection

    frames_per_call = getattr(connection, "FRAMES_PER_CALL", 256)  # (absent before the bound)
    server, _, key_a = _server_with_connection()
    blob = b"".join(_data(key_a, k, bytes([k % 256])) for k in range(5000))
    _, out = server.receive(1, blob)
    calls, delivered = 1, bytearray()
    delivered += b"".join(o.data for o in out if isinstance(o, DataReceived))
    assert len(delivered) <= frames_per_call < 5000
    while server.input_pending(1):
        _, out = server.receive(1, b"")
        calls += 1
        delivered += b"".join(o.data for o in out if isinstance(o, DataReceived))
    assert bytes(delivered) == bytes(k % 256 for k in range(5000))
    assert calls == -(-5000 // frames_per_call)
    # The client side too.
    net = _connect("mptcp-user")
    net.run()
    server_conn = net.server_conn
    assert server_conn is not None and net.client.recv is not None
    first = net.client.recv.next_dsn
    blob = b"".join(Data((first + k) % (1 << 64), b"z").encode() for k in range(1000))
    out = net.client.receive(1, blob)
    assert len([o for o in out if isinstance(o, DataReceived)]) <= frames_per_call
    assert net.client.input_pending(1)


def _classic_with_two_ready_subflows() -> ClientConnection:
    client = ClientConnection(strategy="mptcp-user", paths=2)
    client.start()
    out = client.subflow_connected(1, 0)
    server = Server()
    server.subflow_accepted(1)
    _, answer = server.receive(1, _bytes(out))
    client.receive(1, _bytes(answer))
    out = client.subflow_connected(2, 1)
    server.subflow_accepted(2)
    _, join_ack = server.receive(2, _bytes(out))
    fin = client.receive(2, _bytes(join_ack))
    _, fourth = server.receive(2, _bytes(fin))
    assert SubflowReady(2, 1) in client.receive(2, _bytes(fourth))
    return client


def test_a_lost_subflow_is_rejoined_unless_the_connection_was_abandoned():
    live = _classic_with_two_ready_subflows()
    assert OpenSubflow(1) in live.subflow_closed(2)  # as the kernel's path manager re-creates it
    ended = _classic_with_two_ready_subflows()
    ended.abandon()
    # The application aborted: its subflows going away must not open a join (a SYN after the end).
    assert not any(isinstance(o, OpenSubflow) for o in ended.subflow_closed(2) + ended.subflow_closed(1))
