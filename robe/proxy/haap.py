"""The Hybrid Access Aggregation Point (HAAP) of experiment 2 (paper Figure 7, the network's end).

Terminates the client proxy's connections on two listeners: a kernel MPTCP listening socket on
``--port`` (it accepts plain TCP too, so ``tcp``, ``mptcp``, ``robe-sim`` and ``robe-timer`` all
arrive there) and a userspace-transport listener (``robe.userspace``) on ``--user-port`` for
``mptcp-user``, ``robe-downgrade``, ``robe-bbm`` and ``robe-esim``. Each connection starts with a
Convert header (``robe.proxy.convert``) naming the original destination. The HAAP refuses (RST,
logged ``refused`` with the reason) malformed headers, headers that do not arrive in time (on the
userspace listener a subflow must also finish its CAP or JOIN in that time), connections beyond
``--max-connections``, and destinations ``robe.proxy.destinations`` refuses: outside the allowed
networks (default 198.18.0.0/15, the emulated internet), special addresses, loopback and the
HAAP's own addresses unless named explicitly, and always the HAAP's own listeners. It opens
plain TCP to the destination, writes the first data that came with the header and relays both
ways with half-close and backpressure. Command line::

    python -m robe.proxy.haap --bind 0.0.0.0 --port 8000 --user-port 8001 --allow 198.18.0.0/15 --log FILE

It prints ``READY {json}`` once listening (a catch-all allow-list prints a loud warning on stderr
first); SIGTERM or SIGINT close everything and flush the log.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from robe import kernel
from robe.protocol.sending import SCHEDULERS
from robe.proxy import convert
from robe.proxy.connlog import ConnLog
from robe.proxy.destinations import DestinationPolicy, catch_all_warnings, normalise_network
from robe.proxy.relay import describe, relay
from robe.proxy.streams import LISTEN_BACKLOG, READ_LIMIT, BoundedServer, ByteStream, SocketStream, raise_fd_limit
from robe.userspace import ServerHandle

ROLE = "haap"
DEFAULT_ALLOW = ("198.18.0.0/15",)
#: Open connections per listener (kernel connections; userspace subflows) at most by default.
MAX_CONNECTIONS = 4096
#: How the log's ``closed`` event names a connection the HAAP accepted that ended before any header
#: byte: a loser of RobE_SIM/TIMER (or a superseded eSIM attempt) that the kernel had accepted.
LOSING_ATTEMPT = "a losing attempt"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A bad setting; the message names the field and the value."""


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """Networks from text, or ConfigError naming the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(normalise_network(ipaddress.ip_network(value, strict=True)))
        except ValueError as err:
            raise ConfigError(f"allow: {value!r}: {err}") from None
    return tuple(networks)


@dataclass(frozen=True)
class HaapConfig:
    """Settings of the HAAP, validated when built.

    Attributes:
        port: the kernel (MPTCP, accepting TCP too) listener's port (0: any free one).
        bind: the address both listeners bind.
        user_port: the userspace-transport listener's port (None: no such listener; 0: any).
        allow: destinations the HAAP connects to; anything else is refused (and within them, what
            ``robe.proxy.destinations`` refuses).
        header_timeout_s: a connection without a complete header after this long is refused; on
            the userspace listener, also a subflow that has not finished its CAP or JOIN.
        connect_timeout_s: give up connecting to a destination after this long.
        user_scheduler: the userspace listener's scheduler (``robe.protocol.sending.SCHEDULERS``).
        max_connections: open connections on the kernel listener, and open subflows on the
            userspace listener, at most; further ones are reset at once (and logged).
    """

    port: int
    bind: str = "0.0.0.0"
    user_port: int | None = None
    allow: tuple[Network, ...] = parse_networks(DEFAULT_ALLOW)
    header_timeout_s: float = 10.0
    connect_timeout_s: float = 30.0
    user_scheduler: str = "lowest-rtt"
    max_connections: int = MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port={self.port}: must be 0..65535")
        if self.user_port is not None and not 0 <= self.user_port < 65536:
            raise ConfigError(f"user_port={self.user_port}: must be 0..65535")
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise ConfigError(f"bind={self.bind!r}: not an IP address") from None
        if not self.allow:
            raise ConfigError("allow=(): give at least one allowed destination network")
        if not self.header_timeout_s > 0:
            raise ConfigError(f"header_timeout_s={self.header_timeout_s!r}: must be > 0")
        if not self.connect_timeout_s > 0:
            raise ConfigError(f"connect_timeout_s={self.connect_timeout_s!r}: must be > 0")
        if self.user_scheduler not in SCHEDULERS:
            raise ConfigError(f"user_scheduler={self.user_scheduler!r}: unknown (known: {', '.join(SCHEDULERS)})")
        if not 1 <= self.max_connections <= 1_000_000:
            raise ConfigError(f"max_connections={self.max_connections!r}: must be 1..1000000")

    def allows(self, address: convert.IPAddress) -> bool:
        """Whether ``address`` lies in an allowed network (the policy refuses more: ``refusal``)."""
        return any(address in network for network in self.allow)

    def warnings(self) -> list[str]:
        """What an operator must hear about these settings (a catch-all allow-list)."""
        return catch_all_warnings(self.allow)


class _RefusedError(Exception):
    """The connection is refused; the message is the logged reason."""


def kernel_listener(bind: str, port: int) -> socket.socket:
    """A bound MPTCP stream socket (plain TCP clients fall back to TCP on it)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, kernel.IPPROTO_MPTCP)
    except OSError as err:
        raise kernel.MptcpUnavailableError(
            f"MPTCP socket refused ({err.strerror}): needs CONFIG_MPTCP and net.mptcp.enabled=1"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    return sock


class Haap:
    """The two listeners and every relayed connection."""

    def __init__(self, config: HaapConfig, log: ConnLog) -> None:
        self.config = config
        self.log = log
        self.count = 0
        self.connections: set[asyncio.Task[Any]] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.user_server = BoundedServer(on_connection=self._on_user, scheduler=config.user_scheduler,
                                         handshake_timeout_s=config.header_timeout_s,
                                         max_subflows=config.max_connections)  # fmt: skip
        self.port = config.port
        self.user_port = config.user_port
        self.kernel_open = 0  # connections accepted on the kernel listener and not closed yet
        self.refused_busy = 0  # connections reset at once because max_connections were open
        self.policy = DestinationPolicy(config.allow)

    async def start(self) -> None:
        """Start both listeners (``port`` and ``user_port`` then hold the real ports)."""
        sock = kernel_listener(self.config.bind, self.config.port)
        try:
            server = await asyncio.start_server(self._on_kernel, sock=sock, backlog=LISTEN_BACKLOG, limit=READ_LIMIT)
        except BaseException:
            sock.close()
            raise
        self.servers.append(server)
        self.port = sock.getsockname()[1]
        if self.config.user_port is not None:
            user = await self.user_server.listen(self.config.bind, self.config.user_port)
            self.servers.append(user)
            self.user_port = user.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.policy.own_ports = {p for p in (self.port, self.user_port) if p is not None}

    async def stop(self) -> None:
        """Stop listening and close every connection (each logged as closed by ``shutdown``)."""
        for server in self.servers:
            server.close()
        tasks = list(self.connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()

    async def _on_kernel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = SocketStream(reader, writer)
        sock = stream.socket
        peer = writer.get_extra_info("peername")
        if self.kernel_open >= self.config.max_connections:
            self.refused_busy += 1
            peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None
            self.log.event("refused", "-", peer=peer_text, dst=None,
                           reason=f"too many connections ({self.kernel_open} open, max_connections)")  # fmt: skip
            stream.abort()
            return
        self.kernel_open += 1
        try:
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._serve(stream, peer, "kernel", kernel.is_mptcp(sock) if sock is not None else None)
        finally:
            self.kernel_open -= 1

    async def _on_user(self, handle: ServerHandle) -> None:
        stream = self.user_server.stream(handle)
        transports = self.user_server.connection_transports(handle.conn)
        peer = transports[0].get_extra_info("peername") if transports else None
        await self._serve(stream, peer, "user", True)

    async def _read_header(self, stream: ByteStream) -> tuple[convert.Destination, bytes]:
        decoder = convert.Decoder()
        try:
            async with asyncio.timeout(self.config.header_timeout_s):
                while True:
                    try:
                        data = await stream.read(convert.MAX_HEADER_LEN)
                    except ConnectionResetError:
                        if decoder.buffered:
                            raise
                        data = None
                    if not data and not decoder.buffered:
                        # RobE_SIM/TIMER reset their losing attempts (the kernel may have accepted
                        # one first); a superseded eSIM attempt ends. Not a refusal.
                        how = "reset" if data is None else "ended"
                        raise ConnectionResetError(f"{how} before any header byte ({LOSING_ATTEMPT})")
                    if not data:
                        raise _RefusedError(f"closed after {decoder.buffered} bytes, before a complete header")
                    destination = decoder.feed(data)
                    if destination is not None:
                        return destination, decoder.payload
        except convert.ConvertError as err:
            raise _RefusedError(f"malformed header: {err.reason}") from None
        except TimeoutError:
            raise _RefusedError(f"no complete header within {self.config.header_timeout_s:g} s") from None

    async def _serve(self, stream: ByteStream, peer: Any, transport: str, mptcp: bool | None) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        self.count += 1
        conn = f"h{self.count}"
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None
        self.log.event("accepted", conn, peer=peer_text, transport=transport, mptcp=mptcp)
        fields: dict[str, Any] = {"dst": None, "transport": transport, "bytes_up": 0, "bytes_down": 0,
                                  "error": None}  # fmt: skip
        origin: SocketStream | None = None
        finished = False
        try:
            destination, first = await self._read_header(stream)
            fields["dst"] = str(destination)
            refusal = self.policy.refusal(destination.address, destination.port)
            if refusal is not None:
                raise _RefusedError(refusal)
            started = time.monotonic_ns()
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        str(destination.address), destination.port, limit=READ_LIMIT
                    )
            except (OSError, TimeoutError) as err:
                raise ConnectionError(f"connecting to {destination}: {describe(err)}") from None
            origin = SocketStream(reader, writer)
            sock = origin.socket
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = writer.get_extra_info("sockname")
            self.log.event("connected", conn, dst=fields["dst"], setup_ns=time.monotonic_ns() - started,
                           local=f"{local[0]}:{local[1]}" if isinstance(local, tuple) else None)  # fmt: skip
            if first:
                origin.write(first)
            fields["bytes_up"] = len(first)
            result = await relay(stream, origin)
            finished = True
            fields.update(bytes_up=result.up + len(first), bytes_down=result.down, error=result.error,
                          **result.timing())  # fmt: skip
        except _RefusedError as err:
            self.log.event("refused", conn, peer=peer_text, dst=fields["dst"], reason=str(err))
            fields["error"] = f"refused: {err}"
        except asyncio.CancelledError:
            fields["error"] = "shutdown"
            raise
        except Exception as err:
            fields["error"] = describe(err)
        finally:
            if not finished:
                stream.abort()
                if origin is not None:
                    origin.abort()
            self.log.event("closed", conn, **fields)
            if task is not None:
                self.connections.discard(task)


def losers_accepted(events: Sequence[Mapping[str, Any]]) -> int:
    """How many of the connections in ``events`` (the HAAP's connection log) the HAAP accepted and
    then saw end before any header byte: the losers it did half-open work for (the cost table)."""
    return sum(1 for e in events if e.get("event") == "closed" and LOSING_ATTEMPT in str(e.get("error") or ""))


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m robe.proxy.haap", description=__doc__.split("\n")[0])
    parser.add_argument("--bind", default="0.0.0.0", help="address of both listeners (default 0.0.0.0)")
    parser.add_argument("--port", type=int, required=True, help="kernel (MPTCP and TCP) listener port")
    parser.add_argument("--user-port", type=int, default=None, help="userspace-transport listener port")
    parser.add_argument("--allow", action="append", default=None,
                        help="allowed destination network; repeat (default 198.18.0.0/15)")  # fmt: skip
    parser.add_argument("--header-timeout", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--connect-timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                        help=f"open connections (userspace: subflows) per listener ({MAX_CONNECTIONS})")  # fmt: skip
    parser.add_argument("--log", default=None, help="connection log, JSON lines (appended)")
    parser.add_argument("--user-scheduler", default="lowest-rtt", choices=sorted(SCHEDULERS),
                        help="scheduler of the userspace listener's connections (default lowest-rtt)")  # fmt: skip
    return parser


def config_from_args(args: argparse.Namespace) -> HaapConfig:
    """Validated settings from the command line."""
    return HaapConfig(
        port=args.port,
        bind=args.bind,
        user_port=args.user_port,
        allow=parse_networks(args.allow or DEFAULT_ALLOW),
        header_timeout_s=args.header_timeout,
        connect_timeout_s=args.connect_timeout,
        user_scheduler=args.user_scheduler,
        max_connections=args.max_connections,
    )


async def serve(config: HaapConfig, log: ConnLog) -> None:
    """Run until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    haap = Haap(config, log)
    for warning in config.warnings():
        print(f"haap: {warning}", file=sys.stderr, flush=True)
        log.event("warning", "-", reason=warning)
    await haap.start()
    try:
        ready = {"role": ROLE, "bind": config.bind, "port": haap.port, "user_port": haap.user_port,
                 "allow": [str(n) for n in config.allow]}  # fmt: skip
        print("READY " + json.dumps(ready), flush=True)
        await stop.wait()
    finally:
        await haap.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m robe.proxy.haap``."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as err:
        print(f"haap: {err}", file=sys.stderr)
        return 2
    raise_fd_limit()
    log = ConnLog(args.log, ROLE)
    try:
        asyncio.run(serve(config, log))
    except (OSError, kernel.MptcpUnavailableError) as err:
        print(f"haap: {err}", file=sys.stderr)
        return 1
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
