"""The userspace transport over real kernel TCP subflows on loopback (two source addresses)."""

import asyncio
import hashlib
import random

import pytest

from robe.userspace import ServerHandle, UserspaceClient, UserspaceServer

SOURCES = ["127.0.0.1", "127.0.0.2"]


async def _transfer(strategy: str, size: int) -> tuple[UserspaceClient, bytes, list[dict[str, object]]]:
    payload = random.Random(size).randbytes(size)
    received = bytearray()
    done = asyncio.Event()
    server_events: list[dict[str, object]] = []

    async def handle(conn: ServerHandle) -> None:
        request = await conn.read()
        assert request == b"GET /big\n"
        await conn.send_all(payload)
        conn.close()
        server_events.extend(conn.events)

    server = UserspaceServer(on_connection=handle)
    listener = await server.listen("127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    client = UserspaceClient(strategy=strategy, server=("127.0.0.1", port), sources=SOURCES)
    await asyncio.wait_for(client.connect(b"GET /big\n"), 5)

    async def drain() -> None:
        while chunk := await client.read():
            received.extend(chunk)
        done.set()

    await asyncio.wait_for(drain(), 30)
    await done.wait()
    client.abort()
    listener.close()
    return client, bytes(received), [*server.events, *server_events]


@pytest.mark.parametrize("strategy", ["mptcp-user", "robe-downgrade", "robe-bbm", "robe-esim"])
def test_a_large_transfer_arrives_byte_identical_over_both_subflows(strategy):
    client, received, _ = asyncio.run(_transfer(strategy, 3_000_000))
    assert hashlib.sha256(received).digest() == hashlib.sha256(random.Random(3_000_000).randbytes(3_000_000)).digest()
    ready = {e["path"] for e in client.events if e["what"] == "subflow_ready"}
    assert ready == {0, 1}, client.events
    assert client.events[0]["what"] == "connect_called"


async def _transfer_with_random_kills(strategy: str, size: int, seed: int) -> tuple[bytes, int]:
    """Download ``size`` bytes while killing a random subflow every few MB (one always stays up)."""
    payload = random.Random(seed).randbytes(size)
    chooser = random.Random(seed + 1)

    async def handle(conn: ServerHandle) -> None:
        await conn.read()
        await conn.send_all(payload)
        conn.close()

    server = UserspaceServer(on_connection=handle)
    listener = await server.listen("127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    client = UserspaceClient(strategy=strategy, server=("127.0.0.1", port), sources=SOURCES)
    await asyncio.wait_for(client.connect(b"GET\n"), 5)
    digest = hashlib.sha256()
    received = kills = 0
    next_kill = chooser.randint(2_000_000, 12_000_000)
    while chunk := await asyncio.wait_for(client.read(1 << 20), 30):
        digest.update(chunk)
        received += len(chunk)
        ready = [sid for sid in client.transports if client.conn.subflows.get(sid) is not None]
        if received >= next_kill and len(ready) >= 2:
            # A random path dies under the data in flight; the other one is alive.
            client.transports[chooser.choice(ready)].abort()
            kills += 1
            next_kill = received + chooser.randint(2_000_000, 12_000_000)
    client.abort()
    listener.close()
    assert received == size
    return digest.digest(), kills


@pytest.mark.parametrize("strategy", ["mptcp-user", "robe-downgrade", "robe-bbm", "robe-esim"])
def test_100_mb_with_random_subflow_kills_arrives_byte_identical(strategy):
    size = 100_000_000
    digest, kills = asyncio.run(_transfer_with_random_kills(strategy, size, seed=11))
    assert digest == hashlib.sha256(random.Random(11).randbytes(size)).digest()
    assert kills >= 5  # killed subflows were replaced by joins, so there was always another to kill
