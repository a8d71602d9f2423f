"""The small programs ``make bench`` runs inside the Figure 3 hosts (``experiments.bench_transport``).

``python -m experiments.bench_programs ROLE [ARGS]``; each role prints ``READY`` once it listens
(servers) and one JSON line with its result (where it has one):

- ``kernel-sink`` / ``user-sink``: accept one connection (kernel MPTCP socket / userspace
  transport), count the bytes until the end: ``{"bytes", "seconds"}`` (first byte to last).
- ``kernel-source MIB`` / ``user-source MIB STRATEGY``: send MIB MiB to the sink.
- ``kernel-acceptor`` / ``idle-user-server``: accept and hold connections.
- ``kernel-setups N`` / ``idle-user N``: open N connections and keep them: CPU per set-up (and,
  for the userspace transport, resident memory per idle connection).
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from topologies.fig3 import CLIENT_A1, CLIENT_A2, SERVER_B1

PORT_KERNEL, PORT_USER = 5101, 5102
IPPROTO_MPTCP = 262
BLOCK = 1 << 20


def _emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4


def _mptcp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)


def _listen(backlog: int) -> socket.socket:
    server = _mptcp_socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((SERVER_B1, PORT_KERNEL))
    server.listen(backlog)
    print("READY", flush=True)
    return server


def kernel_sink() -> None:
    """Count the bytes of one kernel MPTCP connection."""
    conn, _ = _listen(8).accept()
    count, first = 0, None
    while data := conn.recv(BLOCK):
        first = first or time.monotonic()
        count += len(data)
    _emit({"bytes": count, "seconds": time.monotonic() - (first or time.monotonic())})


def kernel_source(mebibytes: str) -> None:
    """Send ``mebibytes`` MiB over one kernel MPTCP connection from path 1."""
    sock = _mptcp_socket()
    sock.bind((CLIENT_A1, 0))
    sock.connect((SERVER_B1, PORT_KERNEL))
    block = b"x" * BLOCK
    for _ in range(int(mebibytes)):
        sock.sendall(block)
    sock.close()


def kernel_acceptor() -> None:
    """Accept kernel MPTCP connections and hold them."""
    server = _listen(1024)
    held = []
    while True:
        conn, _ = server.accept()
        held.append(conn)


def kernel_setups(count: str) -> None:
    """CPU per kernel MPTCP connection set-up (each sends one byte and stays open)."""
    n = int(count)
    held = []
    before = _cpu_s()
    for _ in range(n):
        sock = _mptcp_socket()
        sock.bind((CLIENT_A1, 0))
        sock.connect((SERVER_B1, PORT_KERNEL))
        sock.sendall(b"x")
        held.append(sock)
    _emit({"cpu_ms_per_setup": 1000 * (_cpu_s() - before) / n})


def user_sink() -> None:
    """Count the bytes of one userspace-transport connection."""
    from robe.userspace import UserspaceServer

    async def main() -> None:
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def handle(conn: Any) -> None:
            count, first = 0, None
            while chunk := await conn.read(BLOCK):
                first = first or time.monotonic()
                count += len(chunk)
            done.set_result({"bytes": count, "seconds": time.monotonic() - (first or time.monotonic())})

        server = UserspaceServer(on_connection=handle)
        await server.listen(SERVER_B1, PORT_USER)
        print("READY", flush=True)
        _emit(await done)

    asyncio.run(main())


def user_source(mebibytes: str, strategy: str) -> None:
    """Send ``mebibytes`` MiB over one userspace connection with ``strategy``; wait to be stopped."""
    from robe.userspace import UserspaceClient

    async def main() -> None:
        client = UserspaceClient(strategy=strategy, server=(SERVER_B1, PORT_USER), sources=[CLIENT_A1, CLIENT_A2])
        await client.connect()
        await client.send_all(b"x" * (int(mebibytes) << 20))
        client.close()
        await asyncio.Event().wait()  # the sink reports; the bench stops us

    asyncio.run(main())


def idle_user_server() -> None:
    """Accept userspace connections and read them until they end."""
    from robe.userspace import UserspaceServer

    async def main() -> None:
        async def handle(conn: Any) -> None:
            while await conn.read():
                pass

        server = UserspaceServer(on_connection=handle)
        await server.listen(SERVER_B1, PORT_USER)
        print("READY", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def idle_user(count: str) -> None:
    """CPU per userspace (robe-downgrade) set-up and resident memory per idle connection."""
    from robe.userspace import UserspaceClient

    async def main() -> None:
        n = int(count)
        clients = []
        rss_before, cpu_before = _rss_kib(), _cpu_s()
        for _ in range(n):
            client = UserspaceClient(strategy="robe-downgrade", server=(SERVER_B1, PORT_USER),
                                     sources=[CLIENT_A1, CLIENT_A2])  # fmt: skip
            await client.connect(b"x")
            clients.append(client)
        await asyncio.sleep(0.5)
        _emit({"connections": n, "rss_kib_per_connection": (_rss_kib() - rss_before) / n,
               "cpu_ms_per_setup": 1000 * (_cpu_s() - cpu_before) / n})  # fmt: skip

    asyncio.run(main())


ROLES: dict[str, Callable[..., None]] = {
    "kernel-sink": kernel_sink,
    "kernel-source": kernel_source,
    "kernel-acceptor": kernel_acceptor,
    "kernel-setups": kernel_setups,
    "user-sink": user_sink,
    "user-source": user_source,
    "idle-user-server": idle_user_server,
    "idle-user": idle_user,
}
#: Roles that print READY once they listen.
SERVERS = frozenset({"kernel-sink", "kernel-acceptor", "user-sink", "idle-user-server"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run one role: ``python -m experiments.bench_programs ROLE [ARGS]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ROLES:
        print(f"usage: python -m experiments.bench_programs {{{','.join(ROLES)}}} [ARGS]", file=sys.stderr)
        return 2
    ROLES[args[0]](*args[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
