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
    return client, bytes(received), server.events + server_events


@pytest.mark.parametrize("strategy", ["mptcp-user", "robe-downgrade", "robe-bbm", "robe-esim"])
def test_a_large_transfer_arrives_byte_identical_over_both_subflows(strategy):
    client, received, _ = asyncio.run(_transfer(strategy, 3_000_000))
    assert hashlib.sha256(received).digest() == hashlib.sha256(random.Random(3_000_000).randbytes(3_000_000)).digest()
    ready = {e["path"] for e in client.events if e["what"] == "subflow_ready"}
    assert ready == {0, 1}, client.events
    assert client.events[0]["what"] == "connect_called"


async def _transfer_with_a_kill(strategy: str, size: int) -> bytes:
    payload = random.Random(7).randbytes(size)

    async def handle(conn: ServerHandle) -> None:
        await conn.read()
        await conn.send_all(payload)
        conn.close()

    server = UserspaceServer(on_connection=handle)
    listener = await server.listen("127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    client = UserspaceClient(strategy=strategy, server=("127.0.0.1", port), sources=SOURCES)
    await asyncio.wait_for(client.connect(b"GET\n"), 5)
    received = bytearray()
    killed = False
    while chunk := await asyncio.wait_for(client.read(), 20):
        received += chunk
        paths = {client.paths[sid] for sid in client.transports}
        if not killed and len(received) > size // 3 and paths == {0, 1}:
            # The default path dies mid-transfer: its subflow is reset under the data in flight.
            sid = next(s for s in client.transports if client.paths[s] == 0)
            client.transports[sid].abort()
            killed = True
    client.abort()
    listener.close()
    assert killed, "both subflows were never up at once"
    return bytes(received)


@pytest.mark.parametrize("strategy", ["mptcp-user", "robe-downgrade"])
def test_killing_a_subflow_mid_transfer_loses_nothing(strategy):
    received = asyncio.run(_transfer_with_a_kill(strategy, 4_000_000))
    assert hashlib.sha256(received).digest() == hashlib.sha256(random.Random(7).randbytes(4_000_000)).digest()
