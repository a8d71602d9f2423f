"""The client proxy's accepted socket acknowledges at once: a Nagle-bound client (wget writes a
6-byte TLS record, then its Finished) is not held by a delayed ACK on the loopback hop."""

import asyncio
import socket
import time

from robe.proxy.streams import SocketStream, set_nodelay


async def _second_write_delay(quickack: bool) -> float:
    """Seconds between the server reading a client's 6-byte write and its next small write."""
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = SocketStream(reader, writer, quickack=quickack)
        await stream.read(500)  # a "ClientHello" ...
        stream.write(b"s" * 2000)  # ... answered at once: Linux now delays ACKs (interactive mode)
        await stream.drain()
        while data := await stream.read(100):
            for _ in range(len(data) // 6 if len(data) < 80 else 1):
                arrived.put_nowait(time.monotonic())
        await stream.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))  # Nagle on, as wget's socket
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    client.send(b"h" * 500)
    await asyncio.get_running_loop().run_in_executor(None, client.recv, 2000)
    await asyncio.sleep(0.01)
    client.send(b"123456")
    await asyncio.sleep(0.002)
    client.send(b"F" * 74)  # held by Nagle until the 6 bytes are acknowledged
    first = await asyncio.wait_for(arrived.get(), 5)
    second = await asyncio.wait_for(arrived.get(), 5)
    client.close()
    server.close()
    return second - first


def test_quickack_releases_a_nagle_bound_client_at_once():
    # Without it the Finished waits for the delayed ACK (about 40 ms); with it, for nothing.
    assert asyncio.run(_second_write_delay(quickack=False)) > 0.03
    assert asyncio.run(_second_write_delay(quickack=True)) < 0.02


def test_set_nodelay_on_a_protocol_zero_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0: asyncio would leave Nagle on
    set_nodelay(sock)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    sock.close()
