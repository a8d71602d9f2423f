"""Closing a userspace connection leaves no subflow behind, even one whose join crosses the close.

The soak benchmark found it: a client's join still connecting when the application closed the
connection connected afterwards, completed its handshake and stayed open on both ends for ever
(the application had let go; nothing would close it). The close now abandons the connection: an
attempt still connecting is closed, a join in its handshake is reset, and the server refuses a
join to a connection its application closed (see ``test_connection`` for the state machines).
"""

import asyncio
import os
import socket

from robe.protocol import crypto
from robe.protocol.frames import Cap, CapAck, DataFin, Decoder
from robe.proxy.streams import BoundedClient

SOURCES = ["127.0.0.1", "127.0.0.2"]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_join_still_connecting_when_the_client_closes_never_opens():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fds = _fds()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # one queued connection fills it: a further SYN waits (for the retransmission)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        client = BoundedClient(strategy="mptcp-user", server=("127.0.0.1", port), sources=SOURCES)
        stream = client.stream()
        await asyncio.wait_for(client.connect(b""), 5)
        first, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
        decoder = Decoder()
        while True:
            decoder.feed(await loop.sock_recv(first, 100))
            caps = [f for f in decoder.frames() if isinstance(f, Cap)]
            if caps:
                break
        key_a, key_b = caps[0].key_a, crypto.new_key()
        filler = socket.create_connection(("127.0.0.1", port))  # the accept queue is full now
        # CAP_ACK: the client opens its join on path 1, whose SYN the full queue drops.
        await loop.sock_sendall(first, CapAck(key_b, crypto.idsn(key_a) % (1 << 64)).encode())
        for _ in range(100):
            if client.pending:
                break
            await asyncio.sleep(0.01)
        assert client.pending, "the client opened no join"
        await loop.sock_sendall(first, DataFin(crypto.idsn(key_b) % (1 << 64)).encode())  # the server's end
        stream.write_eof()
        assert await asyncio.wait_for(stream.read(), 5) == b""
        await stream.close()
        queued, _ = await loop.sock_accept(listener)  # the filler: room for the join's retransmitted SYN
        late = []
        try:  # the join's SYN is retransmitted after 1 s: it must not come, its socket is closed
            while True:
                late.append((await asyncio.wait_for(loop.sock_accept(listener), 2.5))[0])
        except TimeoutError:
            pass
        left = {"transports": len(client.transports), "connecting": len(client.raw), "pending": len(client.pending)}
        for sock in (first, filler, queued, listener, *late):
            sock.close()
        assert not late and not any(left.values()), left
        await asyncio.sleep(0.1)
        assert _fds() == fds

    asyncio.run(main())
