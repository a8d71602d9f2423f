"""The relay over loopback sockets: half-close each way, backpressure, resets."""

import asyncio
import contextlib
import hashlib
import random
import socket
import struct
from collections.abc import Awaitable, Callable

from robe.proxy.relay import RelayResult, relay
from robe.proxy.streams import CHUNK, ByteStream, SocketStream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _through_relay(backend: Handler) -> tuple[int, list[RelayResult], list[asyncio.AbstractServer]]:
    """A backend server and a relay in front of it; returns the relay's port."""
    results: list[RelayResult] = []
    back = await asyncio.start_server(backend, "127.0.0.1", 0)
    back_port = back.sockets[0].getsockname()[1]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", back_port)
        results.append(await relay(SocketStream(reader, writer), SocketStream(r2, w2)))

    front = await asyncio.start_server(handle, "127.0.0.1", 0)
    return front.sockets[0].getsockname()[1], results, [back, front]


async def _close(servers: list[asyncio.AbstractServer]) -> None:
    for server in servers:
        server.close()


def test_client_eof_reaches_the_server_which_still_answers():
    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until EOF: only a relayed half-close ends this
        writer.write(f"got {len(data)} {hashlib.sha256(data).hexdigest()}".encode())
        await writer.drain()
        writer.close()

    async def main() -> None:
        port, results, servers = await _through_relay(backend)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = random.Random(1).randbytes(3_000_000)
        writer.write(payload)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer == f"got {len(payload)} {hashlib.sha256(payload).hexdigest()}".encode()
        writer.close()
        await asyncio.sleep(0.05)
        assert results[0].up == len(payload) and results[0].down == len(answer) and results[0].error is None
        await _close(servers)

    asyncio.run(main())


def test_server_eof_reaches_the_client_which_still_sends():
    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello, then my half is done")
        writer.write_eof()
        data = await reader.read()
        # The answer cannot go back (we ended our half); the sum shows up on the relay's count.
        assert data == b"x" * 500_000
        writer.close()

    async def main() -> None:
        port, results, servers = await _through_relay(backend)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b"hello, then my half is done"  # EOF seen
        writer.write(b"x" * 500_000)  # our direction still open through the relay
        await writer.drain()
        writer.write_eof()
        await asyncio.sleep(0.2)
        writer.close()
        assert results and results[0].up == 500_000 and results[0].error is None
        await _close(servers)

    asyncio.run(main())


def test_a_slow_reader_pushes_back_on_the_writer_and_nothing_is_lost():
    release = asyncio.Event()
    received = hashlib.sha256()
    count = 0

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        await release.wait()
        while chunk := await reader.read(1 << 20):
            received.update(chunk)
            count += len(chunk)
        writer.close()

    async def main() -> None:
        port, results, servers = await _through_relay(backend)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = hashlib.sha256()
        offered = 0
        rng = random.Random(2)
        block = rng.randbytes(1 << 20)

        async def push(limit: int) -> None:
            nonlocal offered
            while offered < limit:
                writer.write(block)
                sent.update(block)
                offered += len(block)
                await writer.drain()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(push(256 << 20), 1.5)
        # Kernel buffers of two connections plus the relay's bounded chunk: far from 256 MB.
        stalled_at = offered
        assert stalled_at < 64 << 20, stalled_at
        release.set()
        await asyncio.wait_for(push(stalled_at + (8 << 20)), 20)
        writer.write_eof()
        for _ in range(200):
            if results:
                break
            await asyncio.sleep(0.05)
        assert count == offered and received.digest() == sent.digest()
        assert results[0].up == offered
        writer.close()
        await _close(servers)

    asyncio.run(main())


def test_a_reset_aborts_the_other_side():
    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def main() -> None:
        port, results, servers = await _through_relay(backend)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"0123456789")
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            data = None
        assert data is None  # reset, not an orderly EOF
        await asyncio.sleep(0.05)
        assert results[0].error is not None
        writer.close()
        await _close(servers)

    asyncio.run(main())


class _Source(ByteStream):
    """Endless data, counting what the relay took."""

    def __init__(self) -> None:
        self.taken = 0

    async def read(self, max_bytes: int = CHUNK) -> bytes:
        await asyncio.sleep(0)
        self.taken += max_bytes
        return b"x" * max_bytes

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _StuckSink(_Source):
    """Never drains; never sends."""

    async def read(self, max_bytes: int = CHUNK) -> bytes:
        await asyncio.Event().wait()
        return b""

    async def drain(self) -> None:
        await asyncio.Event().wait()


def test_the_relay_holds_at_most_one_chunk_while_the_sink_is_stuck():
    async def main() -> None:
        source, sink = _Source(), _StuckSink()
        task = asyncio.create_task(relay(source, sink))
        await asyncio.sleep(0.2)
        assert source.taken == CHUNK
        task.cancel()

    asyncio.run(main())
