"""The userspace transport with RobE_IPS's path history (robe-ips-user) and its cost of robustness
(potentially initial attempts and losers reset), over real kernel TCP subflows on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest

from robe.ips import PathHistory, destination_key
from robe.protocol.connection import ClientConnection, OpenSubflow
from robe.selection import HistoryFeed, plan
from robe.strategies import get_strategy
from robe.userspace import ServerHandle, UserspaceClient, UserspaceServer

SOURCES = ["127.0.0.1", "127.0.0.2"]
SERVER = "127.0.0.1"
KEY = destination_key(SERVER)


async def _request(strategy: str, history: PathHistory | None = None) -> UserspaceClient:
    """One request/reply; returns the client after both paths carried a ready subflow (or 3 s)."""

    async def handle(conn: ServerHandle) -> None:
        await conn.read()
        conn.write(b"ok\n")
        while await conn.read():
            pass

    server = UserspaceServer(on_connection=handle)
    listener = await server.listen(SERVER, 0)
    port = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    chosen = get_strategy(strategy)
    paths = plan(chosen, history, SERVER, SOURCES, time.monotonic_ns())
    feed = HistoryFeed(history if chosen.initial_path_selection else None, paths.key, SOURCES)
    client = UserspaceClient(strategy=strategy, server=(SERVER, port), sources=SOURCES, order=paths.order, feed=feed)
    try:
        await asyncio.wait_for(client.connect(b"GET\n"), 5)
        assert await asyncio.wait_for(client.read(), 5) == b"ok\n"
        deadline = time.monotonic() + 3
        while len({e["path"] for e in client.events if e["what"] == "subflow_ready"}) < 2:
            assert time.monotonic() < deadline, list(client.events)
            await asyncio.sleep(0.005)
    finally:
        client.abort()
        listener.close()
    return client


def _count(client: UserspaceClient, what: str) -> int:
    return sum(1 for e in client.events if e["what"] == what)


@pytest.mark.parametrize(
    ("strategy", "attempts", "resets"),
    [("mptcp-user", 1, 0), ("robe-ips-user", 1, 0), ("robe-bbm", 2, 1), ("robe-downgrade", 2, 0), ("robe-esim", 2, 0)],
)
def test_potentially_initial_attempts_and_loser_resets_are_counted(strategy, attempts, resets):
    client = asyncio.run(_request(strategy))
    # "attempt" as the kernel race logs it (a potentially initial subflow), joins apart.
    assert _count(client, "attempt") == attempts, list(client.events)
    assert _count(client, "reset") == resets == client.losers_reset, list(client.events)
    # bbm's loser is reset and its path joins; downgrade attaches it, eSIM recycles it; the classic
    # strategies open one attempt and join the other path.
    assert _count(client, "join_attempt") == (1 if strategy in ("mptcp-user", "robe-ips-user", "robe-bbm") else 0)


def test_ips_user_starts_on_the_path_the_history_ranks_first_and_learns_the_join():
    history = PathHistory()
    history.rtt_sample(KEY, SOURCES[1], 0.0001, time.monotonic())  # path 2 known faster ...
    history.rtt_sample(KEY, SOURCES[0], 0.0500, time.monotonic())  # ... than path 1 (50 ms)
    client = asyncio.run(_request("robe-ips-user", history))
    first = next(e for e in client.events if e["what"] == "attempt")
    assert first["path"] == 1
    assert next(e["path"] for e in client.events if e["what"] == "established") == 1
    join = next(e for e in client.events if e["what"] == "join_attempt")
    assert join["path"] == 0
    snapshot = history.snapshot(KEY, time.monotonic())
    # The CAP's handshake and the join on path 1 (loopback: no retransmission) are outcomes of 1 each,
    # and the join's minimum RTT (microseconds on loopback) pulled path 1's 50 ms estimate down.
    assert snapshot[SOURCES[1]]["success_rate"] == 1.0
    assert snapshot[SOURCES[0]]["success_rate"] == 1.0
    srtt = snapshot[SOURCES[0]]["srtt_ms"]
    assert isinstance(srtt, float) and srtt < 50.0


def test_ips_user_without_history_takes_the_default_path():
    client = asyncio.run(_request("robe-ips-user", PathHistory()))
    assert next(e["path"] for e in client.events if e["what"] == "attempt") == 0


def test_the_state_machine_follows_the_order_and_checks_it():
    assert ClientConnection(strategy="robe-ips-user", paths=2, order=(1, 0)).start() == [OpenSubflow(1, initial=True)]
    assert ClientConnection(strategy="robe-bbm", paths=2, order=(1, 0)).start() == [
        OpenSubflow(1, initial=True),
        OpenSubflow(0, initial=True),
    ]
    with pytest.raises(ValueError, match="order"):
        ClientConnection(strategy="robe-ips-user", paths=2, order=(0, 0))


async def _server_losers(strategy: str) -> list[str]:
    """Peers the userspace server counted as losers over one connection (after its end)."""
    losers: list[str] = []

    async def handle(conn: ServerHandle) -> None:
        await conn.read()
        conn.write(b"ok\n")
        while await conn.read():
            pass

    server = UserspaceServer(on_connection=handle, on_loser=lambda peer, _: losers.append(peer))
    listener = await server.listen(SERVER, 0)
    port = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    client = UserspaceClient(strategy=strategy, server=(SERVER, port), sources=SOURCES)
    await asyncio.wait_for(client.connect(b"GET\n"), 5)
    assert await asyncio.wait_for(client.read(), 5) == b"ok\n"
    deadline = time.monotonic() + 3
    while len({e["path"] for e in client.events if e["what"] == "subflow_ready"}) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    client.abort()
    while server.transports and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    listener.close()
    return losers


@pytest.mark.parametrize(("strategy", "losers"), [("mptcp-user", 0), ("robe-bbm", 1), ("robe-downgrade", 0),
                                                  ("robe-esim", 0)])  # fmt: skip
def test_the_server_counts_the_losers_it_accepted(strategy, losers):
    # bbm's loser completed its TCP handshake (the server accepted it) and was reset before carrying
    # anything; downgrade's and eSIM's became subflows of the connection, and no loser is counted
    # for the subflows the client's abort ends.
    assert len(asyncio.run(_server_losers(strategy))) == losers
