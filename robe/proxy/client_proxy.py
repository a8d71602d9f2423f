"""The transparent client-side proxy of experiment 2 (paper Figure 7, the client's end).

iptables REDIRECT (``robe.proxy.redirect``) sends the client's TCP connections to web ports of the
emulated internet to this proxy. For each accepted connection it reads the original destination
(``SO_ORIGINAL_DST``), takes whatever first data is already there without waiting (an HTTP request
or a TLS ClientHello follows connect() at once; if it is not there yet, the header goes alone),
and opens one multipath connection to the HAAP with the configured strategy over the configured
paths (source addresses, the default path first), sending the Convert header and the first data
together. Then it relays both ways with half-close and backpressure (``robe.proxy.relay``).

A client that closes (FIN or RST) while the multipath connection is still being set up has gone:
the proxy abandons the set-up (the race resets its attempts, and RobE_IPS's history learns that an
attempt was dropped unanswered) instead of waiting for the kernel to give up on SYNs nobody will use
(wget gives up after 30 s; the kernel retries for about two minutes). A client that half-closes
before its answer came is treated the same way, as Squid does by default (``half_closed_clients
off``): HTTP clients do not half-close while they wait for a response.

Every connection is logged as JSON lines (``robe.proxy.connlog``). Command line::

    python -m robe.proxy.client_proxy --listen-port 3129 --haap 10.201.0.1:8000 \\
        [--haap-user 10.201.0.1:8001] --strategy robe-sim --source A1 --source A2 --log FILE \\
        [--listen-addr 127.0.0.1 ...] [--iptables [--redirect-net 198.18.0.0/15 ...]]

It prints ``READY {json}`` once listening; SIGTERM or SIGINT close every connection (logged
``closed`` with error ``shutdown``), remove the iptables rules it installed and flush the log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import json
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from robe import kernel
from robe.client import ConnectError, check_endpoints, parse_server
from robe.protocol.sending import SCHEDULERS
from robe.proxy import convert, redirect
from robe.proxy.aio_connect import MultipathStream, check_strategy, open_multipath
from robe.proxy.connlog import ConnLog
from robe.proxy.relay import describe, relay
from robe.proxy.streams import LISTEN_BACKLOG, SocketStream, raise_fd_limit, set_linger_zero, set_nodelay
from robe.strategies import StrategyError
from robe.userspace_endpoints import is_userspace
from robe_lab.commands import CommandError

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
FIRST_DATA_MAX = 16_384
SUBFLOW_SAMPLE_S = 0.1
CLIENT_CHECK_S = 0.1  # how often the client's socket is looked at while the set-up is in flight
ROLE = "client_proxy"


class ConfigError(ValueError):
    """A bad setting; the message names the field and the value."""


def _address(field_name: str, value: str) -> tuple[str, int]:
    try:
        return parse_server(value)
    except ConnectError:
        raise ConfigError(f"{field_name}={value!r}: expected IPv4ADDRESS:PORT") from None


@dataclass(frozen=True)
class ClientProxyConfig:
    """Settings of the client proxy, validated when built.

    Attributes:
        listen_port: local port (0: any free one).
        haap: the HAAP's kernel listener (TCP/MPTCP strategies).
        strategy: a kernel or userspace strategy name.
        sources: one source address per path, the default path first.
        haap_user: the HAAP's userspace-transport listener (needed by userspace strategies).
        listen_addrs: local addresses to listen on (REDIRECT from OUTPUT delivers to 127.0.0.1).
        timer_s: RobE_TIMER's timer.
        first_data_wait_s: how long to wait for first data (0: take only what is already there).
        first_data_max: at most this many bytes ride with the header.
        connect_timeout_s: give up connecting to the HAAP after this long (None: the kernel decides).
        scheduler: the userspace transport's scheduler (``robe.protocol.sending.SCHEDULERS``).
    """

    listen_port: int
    haap: tuple[str, int]
    strategy: str
    sources: tuple[str, ...]
    haap_user: tuple[str, int] | None = None
    listen_addrs: tuple[str, ...] = ("127.0.0.1",)
    timer_s: float = 1.0
    first_data_wait_s: float = 0.0
    first_data_max: int = FIRST_DATA_MAX
    connect_timeout_s: float | None = None
    scheduler: str = "lowest-rtt"

    def __post_init__(self) -> None:
        if not 0 <= self.listen_port < 65536:
            raise ConfigError(f"listen_port={self.listen_port}: must be 0..65535")
        try:
            check_strategy(self.strategy)
        except StrategyError as err:
            raise ConfigError(str(err)) from None
        try:
            check_endpoints(f"{self.haap[0]}:{self.haap[1]}", list(self.sources))
        except ConnectError as err:
            raise ConfigError(str(err)) from None
        if is_userspace(self.strategy) and self.haap_user is None:
            raise ConfigError(f"haap_user=None: strategy {self.strategy!r} needs the HAAP's userspace listener")
        if self.haap_user is not None:
            _address("haap_user", f"{self.haap_user[0]}:{self.haap_user[1]}")
        if not self.listen_addrs:
            raise ConfigError("listen_addrs=(): give at least one address to listen on")
        for address in self.listen_addrs:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(f"listen_addrs: {address!r} is not an IP address") from None
        if not self.timer_s > 0:
            raise ConfigError(f"timer_s={self.timer_s!r}: must be > 0")
        if not self.first_data_wait_s >= 0:
            raise ConfigError(f"first_data_wait_s={self.first_data_wait_s!r}: must be >= 0")
        if not 0 < self.first_data_max <= 1 << 20:
            raise ConfigError(f"first_data_max={self.first_data_max}: must be 1..1048576")
        if self.connect_timeout_s is not None and not self.connect_timeout_s > 0:
            raise ConfigError(f"connect_timeout_s={self.connect_timeout_s!r}: must be > 0")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler={self.scheduler!r}: unknown (known: {', '.join(SCHEDULERS)})")

    @property
    def target(self) -> tuple[str, int]:
        """Where the strategy's connections go."""
        if is_userspace(self.strategy):
            assert self.haap_user is not None
            return self.haap_user
        return self.haap


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    """(address, port) of a ``sockaddr_in`` or ``sockaddr_in6`` as the kernel returns it."""
    if len(raw) < 8:
        raise ValueError(f"sockaddr of {len(raw)} bytes: too short")
    family = struct.unpack_from("=H", raw)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raise ValueError(f"sockaddr family {family}: not IPv4 or IPv6")


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """The destination the client asked for before REDIRECT (netfilter's conntrack)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
    else:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    try:
        address, port = parse_sockaddr(raw)
    except ValueError as err:
        raise OSError(errno.EINVAL, str(err)) from None
    mapped = ipaddress.ip_address(address)
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        address = str(mapped.ipv4_mapped)
    return address, port


class _ClientLeftError(Exception):
    """The client closed its connection before the multipath connection was set up."""


async def _until_client_leaves(sock: socket.socket) -> None:
    """Return once the client's TCP connection is no longer established (FIN or RST from the client).

    Polled (``CLIENT_CHECK_S``): a readable socket does not tell a FIN from more request bytes without
    reading them, and they belong to the server."""
    while True:
        info = kernel.tcp_info(sock)
        if info is None or info.state != kernel.TCP_ESTABLISHED:
            return
        await asyncio.sleep(CLIENT_CHECK_S)


async def _unless_client_leaves(sock: socket.socket, connecting: Awaitable[MultipathStream]) -> MultipathStream:
    """``connecting``'s stream, or ``_ClientLeftError`` (the set-up cancelled) if the client leaves first."""
    connect = asyncio.ensure_future(connecting)
    watch = asyncio.ensure_future(_until_client_leaves(sock))
    try:
        await asyncio.wait({connect, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (connect, watch):
            if not task.done():
                task.cancel()
        await asyncio.gather(connect, watch, return_exceptions=True)
    if connect.cancelled():
        raise _ClientLeftError("the client closed its connection while the set-up was in flight")
    return connect.result()


class _RefusedError(Exception):
    """The connection cannot be proxied; the message is the logged reason."""


def _fmt(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


def _note_subflows(stream: MultipathStream, fields: dict[str, Any]) -> None:
    count = stream.subflow_count()
    if count is not None:
        fields["subflows"] = max(count, fields["subflows"] or 0)
    stream.report_subflows()  # RobE_IPS learns every path's RTT from the subflows, as they appear


def _closing(stream: MultipathStream, fields: dict[str, Any]) -> None:
    _note_subflows(stream, fields)


async def _sample_subflows(stream: MultipathStream, fields: dict[str, Any]) -> None:
    """The most subflows the connection had, and each new subflow's RTT for RobE_IPS: sampled at 5, 10,
    20, 40 and 80 ms (joins come early), then every ``SUBFLOW_SAMPLE_S``. The kernel tears subflows
    down while the connection closes, so the count at the end alone says little."""
    delays = iter((0.005, 0.005, 0.01, 0.02, 0.04))
    while stream.subflow_count() is not None:
        _note_subflows(stream, fields)
        await asyncio.sleep(next(delays, SUBFLOW_SAMPLE_S))


class ClientProxy:
    """Accepts redirected connections and relays each over one multipath connection to the HAAP."""

    def __init__(
        self,
        config: ClientProxyConfig,
        log: ConnLog,
        original_dst: Callable[[socket.socket], tuple[str, int]] = original_destination,
    ) -> None:
        self.config = config
        self.log = log
        self.original_dst = original_dst
        self.listeners: list[socket.socket] = []
        self.accepting: list[asyncio.Task[None]] = []
        self.connections: set[asyncio.Task[None]] = set()
        self.count = 0
        self.port = config.listen_port

    async def start(self) -> list[tuple[str, int]]:
        """Listen on every configured address; return the listening addresses."""
        try:
            for address in self.config.listen_addrs:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                self.listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, self.port))
                self.port = sock.getsockname()[1]  # port 0: the others take the same one
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
        except OSError:
            for sock in self.listeners:
                sock.close()
            self.listeners.clear()
            raise
        self.accepting = [asyncio.create_task(self._accept(sock)) for sock in self.listeners]
        return [(s.getsockname()[0], s.getsockname()[1]) for s in self.listeners]

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as err:  # out of file descriptors and the like: back off, keep serving
                self.log.event("accept_failed", "-", error=describe(err))
                await asyncio.sleep(0.05)
                continue
            sock.setblocking(False)
            set_nodelay(sock)  # the proxy's writes to the client go out at once, whatever their size
            task = asyncio.create_task(self._handle(sock, peer))
            self.connections.add(task)
            task.add_done_callback(self.connections.discard)

    async def stop(self) -> None:
        """Stop listening and close every connection (each logged as closed by ``shutdown``)."""
        for task in self.accepting:
            task.cancel()
        await asyncio.gather(*self.accepting, return_exceptions=True)
        for sock in self.listeners:
            sock.close()
        tasks = list(self.connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _first_data(self, sock: socket.socket) -> bytes:
        """What the client already sent (never waiting longer than ``first_data_wait_s``)."""
        try:
            return sock.recv(self.config.first_data_max)
        except BlockingIOError:
            pass
        if self.config.first_data_wait_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.first_data_wait_s):
                    return await asyncio.get_running_loop().sock_recv(sock, self.config.first_data_max)
        return b""

    async def _handle(self, sock: socket.socket, peer: Any) -> None:
        self.count += 1
        conn = f"c{self.count}"
        config = self.config
        fields: dict[str, Any] = {"dst": None, "strategy": config.strategy, "path": None, "bytes_up": 0,
                                  "bytes_down": 0, "subflows": None, "error": None}  # fmt: skip
        self.log.event("accepted", conn, peer=_fmt(peer))
        raw: socket.socket | None = sock
        client: SocketStream | None = None
        remote: MultipathStream | None = None
        finished = False
        try:
            try:
                dst = self.original_dst(sock)
            except OSError as err:
                raise _RefusedError(f"no original destination: {describe(err)}") from None
            if dst == sock.getsockname()[:2]:
                raise _RefusedError("not redirected: the destination is the proxy itself")
            fields["dst"] = _fmt(dst)
            first = await self._first_data(sock)
            fields["bytes_up"] = len(first)
            header = convert.encode(convert.Destination(ipaddress.ip_address(dst[0]), dst[1]))
            remote = await _unless_client_leaves(sock, open_multipath(
                config.strategy, config.target, config.sources, header + first, config.timer_s,
                timeout_s=config.connect_timeout_s, scheduler=config.scheduler))  # fmt: skip
            fields["path"] = remote.path
            self.log.event("connected", conn, dst=fields["dst"], strategy=config.strategy, path=remote.path,
                           first_bytes=len(first), setup_ns=remote.setup_ns, local=remote.local,
                           race=remote.events, ips_mode=remote.ips_mode)  # fmt: skip
            client = await SocketStream.wrap(sock, quickack=True)
            raw = None
            sampler = asyncio.create_task(_sample_subflows(remote, fields))
            try:
                result = await relay(client, remote, before_close=lambda: _closing(remote, fields))
            finally:
                sampler.cancel()
            finished = True
            fields.update(bytes_up=result.up + len(first), bytes_down=result.down, error=result.error,
                          ready=remote.subflows_ready(), **result.timing())  # fmt: skip
        except _RefusedError as err:
            self.log.event("refused", conn, dst=fields["dst"], reason=str(err))
            fields["error"] = f"refused: {err}"
        except _ClientLeftError as err:
            fields["error"] = f"client left: {err}"
        except asyncio.CancelledError:
            fields["error"] = "shutdown"
            raise
        except Exception as err:  # connecting to the HAAP failed, the client reset, ...
            fields["error"] = describe(err)
        finally:
            if not finished:
                for stream in (client, remote):
                    if stream is not None:
                        stream.abort()
                if raw is not None:
                    set_linger_zero(raw)
                    raw.close()
            self.log.event("closed", conn, **fields)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m robe.proxy.client_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--listen-port", type=int, required=True, help="local port (0: any)")
    parser.add_argument("--listen-addr", action="append", default=None,
                        help="address to listen on; repeat for more (default 127.0.0.1)")  # fmt: skip
    parser.add_argument("--haap", required=True, help="ADDR:PORT of the HAAP's kernel (TCP/MPTCP) listener")
    parser.add_argument("--haap-user", default=None, help="ADDR:PORT of the HAAP's userspace-transport listener")
    parser.add_argument("--strategy", required=True, help="a kernel or userspace strategy")
    parser.add_argument("--source", action="append", required=True,
                        help="source address of a path; repeat per path, default path first")  # fmt: skip
    parser.add_argument("--timer", type=float, default=1.0, help="RobE_TIMER timer in seconds (default 1)")
    parser.add_argument("--first-data-wait", type=float, default=0.0,
                        help="seconds to wait for the client's first data (default 0: only what is there)")  # fmt: skip
    parser.add_argument("--connect-timeout", type=float, default=None, help="seconds (default: the kernel decides)")
    parser.add_argument("--scheduler", default="lowest-rtt", choices=sorted(SCHEDULERS),
                        help="userspace strategies: lowest-rtt (default) or kernel-default (Linux's rule)")  # fmt: skip
    parser.add_argument("--log", default=None, help="connection log, JSON lines (appended)")
    parser.add_argument("--iptables", action="store_true",
                        help="install the REDIRECT rules while running (and remove them on exit)")  # fmt: skip
    parser.add_argument("--redirect-net", action="append", default=None,
                        help="destination network to redirect; repeat (default 198.18.0.0/15)")  # fmt: skip
    parser.add_argument("--redirect-port", action="append", type=int, default=None,
                        help="destination port to redirect; repeat (default 80 and 443)")  # fmt: skip
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[ClientProxyConfig, redirect.RedirectConfig | None]:
    """Validated settings from the command line."""
    haap = _address("haap", args.haap)
    haap_user = _address("haap_user", args.haap_user) if args.haap_user else None
    config = ClientProxyConfig(
        listen_port=args.listen_port,
        haap=haap,
        strategy=args.strategy,
        sources=tuple(args.source),
        haap_user=haap_user,
        listen_addrs=tuple(args.listen_addr or ("127.0.0.1",)),
        timer_s=args.timer,
        first_data_wait_s=args.first_data_wait,
        connect_timeout_s=args.connect_timeout,
        scheduler=args.scheduler,
    )
    rules = None
    if args.iptables:
        if args.listen_port == 0:
            raise ConfigError("listen_port=0: --iptables needs a fixed port")
        exclude = tuple(dict.fromkeys(a[0] for a in (haap, haap_user) if a is not None))
        try:
            rules = redirect.RedirectConfig(
                to_port=args.listen_port,
                networks=tuple(args.redirect_net or redirect.DEFAULT_NETWORKS),
                ports=tuple(args.redirect_port or redirect.DEFAULT_PORTS),
                exclude=exclude,
            )
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return config, rules


async def serve(config: ClientProxyConfig, log: ConnLog, rules: redirect.RedirectConfig | None) -> None:
    """Run until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    proxy = ClientProxy(config, log)
    listening = await proxy.start()
    try:
        if rules is not None:
            redirect.install(rules)
        ready = {"role": ROLE, "listen": [_fmt(a) for a in listening], "port": proxy.port,
                 "strategy": config.strategy, "haap": _fmt(config.target), "sources": list(config.sources),
                 "redirect": rules.chain if rules else None}  # fmt: skip
        print("READY " + json.dumps(ready), flush=True)
        await stop.wait()
    finally:
        await proxy.stop()
        if rules is not None:
            for failure in redirect.remove(rules):
                print(f"client_proxy: removing iptables rules: {failure}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m robe.proxy.client_proxy``."""
    args = build_parser().parse_args(argv)
    try:
        config, rules = config_from_args(args)
    except ConfigError as err:
        print(f"client_proxy: {err}", file=sys.stderr)
        return 2
    raise_fd_limit()
    log = ConnLog(args.log, ROLE)
    try:
        asyncio.run(serve(config, log, rules))
    except (OSError, CommandError) as err:
        print(f"client_proxy: {err}", file=sys.stderr)
        return 1
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
