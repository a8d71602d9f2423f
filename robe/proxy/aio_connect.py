"""``open_multipath``: one connection over several paths with any strategy, for asyncio code.

Kernel strategies (``tcp``, ``mptcp``, ``robe-sim``, ``robe-timer``, the ``robe-ips`` family) run
the sans-IO ``Race`` on non-blocking kernel sockets (``robe.kernel.open_socket``), each bound to its path's source
address: the event loop watches each connecting socket for writability, the race's timer runs on
``loop.call_at``, the first established attempt wins and the others are aborted with an RST, as
``robe.client`` does with a selector. The first data goes out on the winner before anything
else. No threads: hundreds of connections can be opened at once. RobE_IPS strategies order the
paths with the process's path history (``robe.selection``) and report their attempts and, through
``MultipathStream.report_subflows``, the subflows' RTTs to it.

Userspace strategies (``mptcp-user``, ``robe-downgrade``, ``robe-bbm``, ``robe-esim``) go through
``robe.userspace.UserspaceClient``; the first data rides with the CAP.

Both come back as a ``MultipathStream``: the ``ByteStream`` interface of ``robe.proxy.streams``
plus the winner path and the connect's events (``time.monotonic_ns()`` timestamps).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from robe import kernel
from robe.client import ConnectError, check_endpoints
from robe.protocol.sending import SCHEDULERS
from robe.proxy.streams import CHUNK, BoundedClient, ByteStream, SocketStream
from robe.race import Action, Race, Step
from robe.selection import HistoryFeed, plan, shared_history
from robe.strategies import Protocol, Strategy, get_strategy, kernel_strategy
from robe.userspace_endpoints import is_userspace


@dataclass
class MultipathStream(ByteStream):
    """An established multipath connection: a byte stream plus how it was set up.

    Attributes:
        inner: the stream the bytes go through.
        strategy: the strategy's name.
        path: the winner (initial) path; 0 is the default path.
        connect_ns: when the connect started.
        established_ns: when the winner was established.
        events: the connect's events: ``t_ns``, ``what``, ``path``, ``detail``.
        local: the winner's local address ``ADDR:PORT`` (kernel strategies).
    """

    inner: ByteStream
    strategy: str
    path: int
    connect_ns: int
    established_ns: int
    events: list[dict[str, Any]] = field(default_factory=list)
    local: str = ""
    feed: HistoryFeed | None = None
    ips_mode: str = "default"
    reported: set[str] = field(default_factory=set)  # subflows (local ADDR:PORT) the history has seen

    def report_subflows(self) -> None:
        """RobE_IPS: give the path history each established subflow's path RTT (its minimum RTT) once,
        when first seen (kernel MPTCP).

        Called while the connection is open (the client proxy samples the subflows from the start):
        once both directions are done the kernel may already have closed the subflows, and a report
        made only then gave the history no sample of the joined path at all.
        """
        if self.feed is None or self.feed.history is None or not isinstance(self.inner, SocketStream):
            return
        sock = self.inner.socket
        if sock is None or sock.proto != kernel.IPPROTO_MPTCP:
            return
        now = time.monotonic_ns()
        for flow in kernel.subflows(sock):
            if flow.established and flow.local not in self.reported:
                self.reported.add(flow.local)
                self.feed.subflow(flow.local, flow.path_rtt_us, now, flow.total_retrans)

    @property
    def setup_ns(self) -> int:
        """connect started -> established."""
        return self.established_ns - self.connect_ns

    def subflow_count(self) -> int | None:
        """Subflows now: kernel MPTCP (MPTCP_TCPINFO) or the userspace connection; None for TCP."""
        if isinstance(self.inner, SocketStream):
            sock = self.inner.socket
            if sock is None or sock.proto != kernel.IPPROTO_MPTCP:
                return None
            return len(kernel.subflows(sock))
        endpoint = getattr(self.inner, "endpoint", None)
        return len(endpoint.subflows) if endpoint is not None else None

    def subflows_ready(self) -> list[dict[str, Any]] | None:
        """Userspace transport: when each subflow became ready for data (``t_ns``, ``path``); None for
        kernel sockets (the kernel's subflows are seen through its MPTCP events)."""
        driver = getattr(self.inner, "driver", None)
        if driver is None:
            return None
        local = {e["sid"]: e["local"] for e in driver.events if e["what"] == "tcp_connected"}
        return [{"t_ns": e["t_ns"], "path": e["path"], "event": e["what"], "local": local.get(e["sid"])}
                for e in driver.events if e["what"] in ("established", "subflow_ready")]  # fmt: skip

    async def read(self, max_bytes: int = CHUNK) -> bytes:
        return await self.inner.read(max_bytes)

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    async def drain(self) -> None:
        await self.inner.drain()

    def write_eof(self) -> None:
        self.inner.write_eof()

    async def close(self) -> None:
        await self.inner.close()

    def abort(self) -> None:
        self.inner.abort()


class _AsyncRace:
    """Carries out a ``Race``'s steps on non-blocking kernel sockets in the running event loop."""

    def __init__(
        self,
        race: Race,
        server: tuple[str, int],
        sources: Sequence[str],
        protocol: Protocol,
        first_data: bytes,
        feed: HistoryFeed | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.race = race
        self.feed = feed or HistoryFeed(None, "", list(sources))
        self.server = server
        self.sources = sources
        self.protocol = protocol
        self.first_data = first_data
        self.unsent = b""  # first data the winner's socket did not take at once
        self.attempts: dict[int, socket.socket] = {}
        self.result: asyncio.Future[tuple[int, socket.socket]] = self.loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due_ns: int | None = None

    def apply(self, steps: list[Step]) -> None:
        for step in steps:
            if step.action is Action.GIVE_UP:
                failures = "; ".join(f"path {e.path}: {e.detail}" for e in self.race.events if e.what == "failed")
                if not self.result.done():
                    self.result.set_exception(ConnectionError(f"every attempt failed ({failures})"))
                continue
            assert step.path is not None
            if step.action is Action.CONNECT:
                self._start(step.path)
                continue
            sock = self.attempts.pop(step.path)
            self.loop.remove_writer(sock)
            if step.action is Action.RESET:
                self.feed.dropped(step.path, time.monotonic_ns())
                kernel.abort(sock)
            else:
                # The first data goes out before the losers are reset, as a browser's request would.
                try:
                    sent = sock.send(self.first_data) if self.first_data else 0
                except BlockingIOError:
                    sent = 0
                except OSError as err:
                    sock.close()
                    self.result.set_exception(err)
                    continue
                self.unsent = self.first_data[sent:]
                self.result.set_result((step.path, sock))
        self._arm_timer()

    def _arm_timer(self) -> None:
        due = self.race.timer_due_ns
        if due == self.timer_due_ns:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_due_ns = due
        if due is not None:
            self.timer = self.loop.call_at(self.loop.time() + (due - time.monotonic_ns()) / 1e9, self._on_timer)

    def _on_timer(self) -> None:
        self.timer, self.timer_due_ns = None, None
        self.apply(self.race.on_timer(time.monotonic_ns()))  # re-arms itself if it woke up early

    def _start(self, path: int) -> None:
        try:
            sock = kernel.open_socket(self.protocol)
        except OSError as err:
            self.loop.call_soon(self._report, path, err.errno or errno.EIO)
            return
        self.attempts[path] = sock
        try:
            sock.bind((self.sources[path], 0))
            self.feed.started(path, time.monotonic_ns())
            code = sock.connect_ex(self.server)
        except OSError as err:
            code = err.errno or errno.EIO
        if code in (0, errno.EINPROGRESS):
            self.loop.add_writer(sock, self._on_writable, path)
        else:
            # Refused at once (no route, address not assigned): reported from the loop, since the
            # race may not be re-entered from inside one of its own steps.
            self.loop.call_soon(self._fail, path, code)

    def _on_writable(self, path: int) -> None:
        sock = self.attempts.get(path)
        if sock is None:
            return
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            now = time.monotonic_ns()
            info = kernel.tcp_info(sock)
            self.feed.established(path, now, 1 if info is None else max(info.total_retrans, info.retransmits))
            self.apply(self.race.on_established(path, now))
        else:
            self._fail(path, code)

    def _fail(self, path: int, code: int) -> None:
        sock = self.attempts.pop(path, None)
        if sock is None:
            return
        self.loop.remove_writer(sock)
        sock.close()
        self._report(path, code)

    def _report(self, path: int, code: int) -> None:
        self.feed.failed(path, time.monotonic_ns())
        self.apply(self.race.on_failed(path, time.monotonic_ns(), os.strerror(code)))

    def cleanup(self) -> None:
        """Abort every attempt still in flight and stop the timer."""
        if self.timer is not None:
            self.timer.cancel()
        for path, sock in self.attempts.items():
            self.loop.remove_writer(sock)
            self.feed.dropped(path, time.monotonic_ns())
            kernel.abort(sock)
        self.attempts.clear()


async def _open_kernel(
    strategy: Strategy, server: tuple[str, int], sources: Sequence[str], first_data: bytes, timer_s: float
) -> MultipathStream:
    multipath = strategy.start_all_at_once or strategy.staggered or strategy.initial_path_selection
    if strategy.protocol is Protocol.TCP or not multipath:
        sources = sources[:1]  # single-path strategies use the default path only
    history = shared_history() if strategy.initial_path_selection else None
    paths = plan(strategy, history, server[0], list(sources), time.monotonic_ns())
    race = Race(paths.strategy, len(sources), int(timer_s * 1e9), order=paths.order)
    feed = HistoryFeed(history, paths.key, list(sources))
    driver = _AsyncRace(race, server, sources, strategy.protocol, first_data, feed)
    try:
        driver.apply(race.start(time.monotonic_ns()))
        path, sock = await driver.result
    except BaseException:
        driver.cleanup()
        won = driver.result
        if won.done() and not won.cancelled() and won.exception() is None:
            kernel.abort(won.result()[1])  # won just as we were cancelled
        raise
    driver.cleanup()
    try:
        stream = await SocketStream.wrap(sock)
    except BaseException:
        kernel.abort(sock)
        raise
    if driver.unsent:
        stream.write(driver.unsent)
    local = sock.getsockname()
    events = [{"t_ns": e.t_ns, "event": e.what, "path": e.path, "detail": e.detail} for e in race.events]
    established = next(e.t_ns for e in race.events if e.what == "winner")
    return MultipathStream(stream, strategy.name, path, race.events[0].t_ns, established, events,
                           f"{local[0]}:{local[1]}", feed, paths.mode)  # fmt: skip


async def _open_userspace(
    name: str, server: tuple[str, int], sources: Sequence[str], first_data: bytes, scheduler: str
) -> MultipathStream:
    strategy = get_strategy(name)
    history = shared_history() if strategy.initial_path_selection else None
    paths = plan(strategy, history, server[0], list(sources), time.monotonic_ns())
    feed = HistoryFeed(history, paths.key, list(sources))  # the client reports its attempt and joins itself
    client = BoundedClient(strategy=name, server=server, sources=list(sources), scheduler=scheduler,
                           order=paths.order, feed=feed)  # fmt: skip
    try:
        path = await client.connect(first_data)
    except BaseException:
        client.abort()
        raise
    events = [{"t_ns": e["t_ns"], "event": e["what"], "path": e.get("path"),
               "detail": str(e.get("reason") or e.get("error") or "")} for e in client.events]  # fmt: skip
    established = next(e["t_ns"] for e in client.events if e["what"] == "established")
    local = next((e["local"] for e in client.events if e["what"] == "tcp_connected" and e["path"] == path), "")
    return MultipathStream(client.stream(), name, path, client.events[0]["t_ns"], established, events, local,
                           ips_mode=paths.mode)  # fmt: skip


def check_strategy(name: str) -> None:
    """Raise ``StrategyError`` unless ``name`` is a kernel or userspace strategy."""
    get_strategy(name)


async def open_multipath(
    strategy: str,
    server: tuple[str, int],
    sources: Sequence[str],
    first_data: bytes = b"",
    timer_s: float = 1.0,
    *,
    timeout_s: float | None = None,
    scheduler: str = "lowest-rtt",
) -> MultipathStream:
    """Connect to ``server`` over ``sources`` (one source address per path, the default path first).

    ``first_data`` is sent with the establishment (on the winner at once; with the userspace CAP).
    ``scheduler`` is the userspace transport's (``robe.protocol.sending.SCHEDULERS``; the kernel
    strategies use the kernel's). Raises ``StrategyError``/``ConnectError`` for bad arguments,
    ``OSError`` (``ConnectionError``) when every attempt failed, ``TimeoutError`` after
    ``timeout_s`` (default: the kernel decides).
    """
    check_strategy(strategy)
    check_endpoints(f"{server[0]}:{server[1]}", list(sources))
    if not timer_s > 0:
        raise ConnectError(f"timer_s={timer_s!r}: must be positive")
    if timeout_s is not None and not timeout_s > 0:
        raise ConnectError(f"timeout_s={timeout_s!r}: must be positive")
    if is_userspace(strategy):
        if scheduler not in SCHEDULERS:
            raise ConnectError(f"scheduler={scheduler!r}: unknown (known: {', '.join(SCHEDULERS)})")
        opening = _open_userspace(strategy, server, sources, first_data, scheduler)
    else:
        opening = _open_kernel(kernel_strategy(strategy), server, sources, first_data, timer_s)
    async with asyncio.timeout(timeout_s):
        return await opening
