"""Hostile clients against the HAAP and the userspace server on loopback: nothing may stay behind.

Each test leaves the HAAP in a state a leak would show in: relay tasks, connection handles, the
sans-IO server's connections and tokens, subflow transports.
"""

import asyncio
import ipaddress
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from robe import userspace
from robe.protocol import crypto
from robe.protocol.frames import Cap, Data, ResetReason, Rst
from robe.proxy import convert
from robe.proxy.connlog import ConnLog
from robe.proxy.haap import Haap, HaapConfig, parse_networks
from robe.userspace import UserspaceServer

LOOPBACK = parse_networks(["127.0.0.0/8"])


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers the first bytes with an echo and closes."""
    data = await reader.read(100)
    writer.write(data)
    await writer.drain()
    writer.close()


@asynccontextmanager
async def _haap(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[Haap, int, Path]]:
    origin = await asyncio.start_server(_origin, "127.0.0.1", 0)
    log_path = tmp_path / "haap.jsonl"
    log = ConnLog(str(log_path), "haap")
    haap = Haap(HaapConfig(port=0, bind="127.0.0.1", user_port=0, allow=LOOPBACK, **config), log)
    await haap.start()
    try:
        yield haap, origin.sockets[0].getsockname()[1], log_path
    finally:
        await haap.stop()
        origin.close()
        log.close()


def _live(haap: Haap) -> dict[str, int]:
    user = haap.user_server
    return {"relay tasks": len(haap.connections), "handles": len(user.handles),
            "connections": len(user.server.connections), "tokens": len(user.server.by_token),
            "subflows": len(user.transports), "deadlines": len(getattr(user, "deadlines", {}))}  # fmt: skip


def _header(port: int) -> bytes:
    return convert.encode(convert.Destination(ipaddress.ip_address("127.0.0.1"), port))


def _ended(sock: socket.socket) -> bool:
    """Whether the server ended the connection (an RST frame and EOF, or a TCP reset); closes it."""
    with sock:
        try:
            while sock.recv(100):
                pass
        except BlockingIOError:
            return False
        except ConnectionResetError:
            pass
        return True


async def _settle(haap: Haap, seconds: float) -> dict[str, int]:
    deadline = asyncio.get_running_loop().time() + seconds
    while any(_live(haap).values()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return _live(haap)


@pytest.mark.parametrize("ending", ["rst frame", "garbage", "tcp reset"])
def test_userspace_connections_ended_by_a_reset_leave_nothing_behind(tmp_path, ending):
    async def main() -> None:
        async with _haap(tmp_path) as (haap, origin, _):
            clients = []
            for i in range(10):
                key_a = 4242 + i
                reader, writer = await asyncio.open_connection("127.0.0.1", haap.user_port)
                first = Data(crypto.idsn(key_a) % (1 << 64), _header(origin) + b"hello").encode()
                writer.write(Cap(1, 0, key_a).encode() + first)
                clients.append((reader, writer))
            await asyncio.sleep(0.5)  # relayed: the origin answered and closed
            assert len(haap.connections) == 10
            for _, writer in clients:
                if ending == "rst frame":
                    writer.write(Rst(ResetReason.UNSPECIFIED).encode())
                elif ending == "garbage":
                    writer.write(b"\xff" * 16)
                else:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    writer.transport.abort()
            live = await _settle(haap, 3.0)
            for _, writer in clients:
                writer.close()
            assert not any(live.values()), live

    asyncio.run(main())


def test_subflows_that_never_complete_a_cap_time_out(tmp_path):
    async def main() -> None:
        async with _haap(tmp_path, header_timeout_s=0.5) as (haap, _, _log):
            loop = asyncio.get_running_loop()
            socks = []
            for _ in range(50):
                sock = socket.socket()
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", haap.user_port))
                await loop.sock_sendall(sock, b"\x01\x00\x00")  # 3 bytes of a CAP header, then silence
                socks.append(sock)
            await asyncio.sleep(2.0)
            assert sum(not _ended(sock) for sock in socks) == 0
            assert not any(_live(haap).values()) and haap.user_server.timed_out == 50

    asyncio.run(main())


def test_both_listeners_cap_their_open_connections(tmp_path):
    async def main() -> None:
        async with _haap(tmp_path, max_connections=5, header_timeout_s=5) as (haap, _, log):
            loop = asyncio.get_running_loop()
            outcomes = {}
            for port in (haap.port, haap.user_port):
                socks = []
                for _ in range(8):
                    sock = socket.socket()
                    sock.setblocking(False)
                    await loop.sock_connect(sock, ("127.0.0.1", port))
                    socks.append(sock)
                await asyncio.sleep(0.3)
                outcomes[port] = sum(_ended(sock) for sock in socks)
            assert outcomes == {haap.port: 3, haap.user_port: 3}
            assert haap.refused_busy == 3 and haap.user_server.refused == 3
            lines = [json.loads(line) for line in log.read_text().splitlines()]
            assert sum("too many connections" in (e.get("reason") or "") for e in lines) == 3

    asyncio.run(main())


def test_nested_headers_never_make_the_haap_connect_to_itself(tmp_path):
    async def main() -> None:
        async with _haap(tmp_path) as (haap, origin, log):
            reader, writer = await asyncio.open_connection("127.0.0.1", haap.port)
            writer.write(_header(haap.port) * 50 + _header(origin) + b"hi")
            with suppress(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await asyncio.sleep(0.3)
            lines = [json.loads(line) for line in log.read_text().splitlines()]
            assert sum(e["event"] == "accepted" for e in lines) == 1, lines
            refused = [e for e in lines if e["event"] == "refused"]
            assert len(refused) == 1 and "the HAAP itself" in refused[0]["reason"]

    asyncio.run(main())


def test_the_userspace_servers_own_event_log_is_bounded(monkeypatch):
    monkeypatch.setattr(userspace, "SERVER_EVENT_LOG", 300, raising=False)  # raising: absent before the bound

    async def main() -> UserspaceServer:
        server = UserspaceServer()
        listener = await server.listen("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        for i in range(400):  # each: accepted, and its end
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(Cap(1, 0, 77 + i).encode())
            await writer.drain()
            writer.close()
        await asyncio.sleep(0.3)
        listener.close()
        return server

    server = asyncio.run(main())
    assert len(server.events) == 300 and not server.server.connections


def test_a_flood_of_one_byte_frames_never_holds_the_event_loop():
    # 20,000 one-byte DATA frames in order (260 KB, nothing held out of order, no bound trips):
    # the server used to handle each read whole, the event loop blocked for ~100 ms per read. Now
    # it takes a slice per loop turn: other callbacks run in between, and the bytes all arrive.
    async def main() -> None:
        received = bytearray()
        done = asyncio.Event()

        async def sink(handle: userspace.ServerHandle) -> None:
            while chunk := await handle.read():
                received.extend(chunk)
                if len(received) == 20_000:
                    done.set()

        server = UserspaceServer(on_connection=sink)
        listener = await server.listen("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        turns = 0
        ticking = True

        async def ticker() -> None:
            nonlocal turns
            while ticking:
                await asyncio.sleep(0)
                turns += 1

        key_a = 99
        base = crypto.idsn(key_a)
        blob = b"".join(Data((base + k) % (1 << 64), b"x").encode() for k in range(20_000))
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(Cap(1, 0, key_a).encode() + blob)
        await writer.drain()
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = turns
        await asyncio.wait_for(done.wait(), 10)
        ticking = False
        await tick
        writer.close()
        listener.close()
        # At least one loop turn per slice of frames (80 slices of 256): never one block for all.
        assert turns - start >= 40, turns - start
        assert bytes(received) == b"x" * 20_000

    asyncio.run(main())
