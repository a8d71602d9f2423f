"""Client proxy -> HAAP -> origin on loopback: every backend of open_multipath, refusals, logs, CLI."""

import asyncio
import hashlib
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from robe.proxy import convert
from robe.proxy.aio_connect import open_multipath
from robe.proxy.client_proxy import ClientProxy, ClientProxyConfig
from robe.proxy.connlog import ConnLog
from robe.proxy.haap import Haap, HaapConfig, parse_networks
from robe.proxy.streams import RECV_HIGH_WATER, UserspaceStream, raise_fd_limit
from robe.selection import shared_history
from robe.strategies import Kind, kernel_mptcp, names

SOURCES = ("127.0.0.1", "127.0.0.2")
LOOPBACK = parse_networks(["127.0.0.0/8"])
ROOT = Path(__file__).resolve().parents[2]


def _download(size: int) -> bytes:
    return random.Random(size).randbytes(size)


async def _origin_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request until EOF, answers with its SHA-256 and then N deterministic bytes.

    The request's first line is ``N``; a request starting with ``HELLO?`` gets a greeting first
    (a server-speaks-first protocol).
    """
    first = await reader.readline()
    if first.startswith(b"HELLO?"):
        writer.write(b"220 hello\n")
        await writer.drain()
        first = await reader.readline()
    rest = await reader.read()  # until the relayed half-close
    size = int(first)
    writer.write(hashlib.sha256(first + rest).hexdigest().encode() + b"\n")
    writer.write(_download(size))
    await writer.drain()
    writer.close()


@dataclass
class Setup:
    origin: int
    haap: Haap
    haap_log: Path

    @property
    def user_port(self) -> int:
        assert self.haap.user_port is not None
        return self.haap.user_port

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.haap_log.read_text().splitlines()]


@asynccontextmanager
async def _setup(tmp_path: Path, allow: Any = LOOPBACK) -> AsyncIterator[Setup]:
    origin = await asyncio.start_server(_origin_handler, "127.0.0.1", 0)
    log = ConnLog(str(tmp_path / "haap.jsonl"), "haap")
    haap = Haap(HaapConfig(port=0, bind="127.0.0.1", user_port=0, allow=allow), log)
    await haap.start()
    try:
        yield Setup(origin.sockets[0].getsockname()[1], haap, tmp_path / "haap.jsonl")
    finally:
        await haap.stop()
        origin.close()
        log.close()


def _header(port: int, host: str = "127.0.0.1") -> bytes:
    return convert.encode(convert.Destination(ipaddress.ip_address(host), port))


async def _exchange(stream: Any, request: bytes) -> bytes:
    stream.write(request)
    await stream.drain()
    stream.write_eof()
    received = bytearray()
    while chunk := await asyncio.wait_for(stream.read(), 20):
        received += chunk
    await stream.close()
    return bytes(received)


def _check_answer(answer: bytes, request: bytes, size: int) -> None:
    line, _, body = answer.partition(b"\n")
    assert line.decode() == hashlib.sha256(request).hexdigest()
    assert len(body) == size and body == _download(size)


USER = ("mptcp-user", "robe-downgrade", "robe-bbm", "robe-esim")


@pytest.mark.parametrize("strategy", [*names(Kind.KERNEL), *USER])
def test_open_multipath_through_the_haap_to_an_origin(tmp_path, strategy):
    async def main() -> None:
        async with _setup(tmp_path) as setup:
            server = (
                "127.0.0.1",
                setup.user_port if strategy in USER else setup.haap.port,
            )
            request = b"3000000\n" + random.Random(5).randbytes(1_500_000)
            first, rest = request[:1000], request[1000:]
            stream = await open_multipath(strategy, server, SOURCES, _header(setup.origin) + first, timer_s=0.5,
                                          timeout_s=5)  # fmt: skip
            assert stream.strategy == strategy and stream.path in (0, 1)
            assert stream.events[0]["event"] == "connect_called" and stream.setup_ns > 0
            answer = await _exchange(stream, rest)
            _check_answer(answer, request, 3_000_000)
            await asyncio.sleep(0.1)
            closed = [e for e in setup.lines() if e["event"] == "closed" and e["dst"]]
            assert len(closed) == 1 and closed[0]["error"] is None, setup.lines()
            losers = [e for e in setup.lines() if e["event"] == "closed" and not e["dst"]]
            assert all("losing attempt" in e["error"] for e in losers), losers
            assert closed[0]["bytes_up"] == len(request) and closed[0]["bytes_down"] == len(answer)
            accepted = next(e for e in setup.lines() if e["event"] == "accepted" and e["conn"] == closed[0]["conn"])
            assert accepted["transport"] == ("user" if strategy in USER else "kernel")
            assert not [e for e in setup.lines() if e["event"] == "refused"]
            if strategy in kernel_mptcp():
                assert accepted["mptcp"] is True
            if strategy == "tcp":
                assert accepted["mptcp"] is False

    asyncio.run(main())


def test_many_concurrent_connections_without_threads(tmp_path):
    async def main() -> None:
        async with _setup(tmp_path) as setup:

            async def one(i: int) -> None:
                stream = await open_multipath("robe-sim", ("127.0.0.1", setup.haap.port), SOURCES,
                                              _header(setup.origin) + f"{i}\n".encode(), timeout_s=10)  # fmt: skip
                _check_answer(await _exchange(stream, b""), f"{i}\n".encode(), i)

            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 60)
            await asyncio.sleep(0.1)
            closed = [e for e in setup.lines() if e["event"] == "closed" and e["dst"]]
            assert len(closed) == 200 and all(e["error"] is None for e in closed)

    asyncio.run(main())


async def _refused(setup: Setup, send: Callable[[], Any]) -> dict[str, Any]:
    outcome = await send()
    assert outcome in (b"", "reset"), outcome
    for _ in range(50):
        refused = [e for e in setup.lines() if e["event"] == "refused"]
        if refused:
            closed = [e for e in setup.lines() if e["event"] == "closed"]
            assert closed and closed[-1]["error"].startswith("refused: ")
            return refused[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no refusal logged: {setup.lines()}")


async def _read_outcome(stream: Any) -> bytes | str:
    try:
        return bytes(await asyncio.wait_for(stream.read(), 5))
    except ConnectionResetError:
        return "reset"


def test_the_haap_refuses_a_destination_outside_the_allowed_networks(tmp_path):
    async def main() -> None:
        async with _setup(tmp_path, allow=parse_networks(["198.18.0.0/15"])) as setup:

            async def send() -> bytes | str:
                stream = await open_multipath("tcp", ("127.0.0.1", setup.haap.port), SOURCES,
                                              _header(setup.origin) + b"1\n")  # fmt: skip
                return await _read_outcome(stream)

            refused = await _refused(setup, send)
            assert refused["dst"] == f"127.0.0.1:{setup.origin}"
            assert "outside the allowed networks (198.18.0.0/15)" in refused["reason"]

    asyncio.run(main())


def test_the_haap_refuses_malformed_headers_on_both_listeners(tmp_path):
    async def main() -> None:
        async with _setup(tmp_path) as setup:

            async def kernel_send() -> bytes | str:
                reader, writer = await asyncio.open_connection("127.0.0.1", setup.haap.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    return await asyncio.wait_for(reader.read(), 5)
                except ConnectionResetError:
                    return "reset"
                finally:
                    writer.close()

            refused = await _refused(setup, kernel_send)
            assert refused["reason"].startswith("malformed header: bad magic")

            async def user_send() -> bytes | str:
                stream = await open_multipath("robe-downgrade", ("127.0.0.1", setup.user_port), SOURCES,
                                              b"RL\x07\x06" + bytes(20))  # fmt: skip
                return await _read_outcome(stream)

            setup.haap_log.write_text("")
            refused = await _refused(setup, user_send)
            assert refused["reason"] == "malformed header: unknown version 7 (supported: 1)"

    asyncio.run(main())


@asynccontextmanager
async def _client_proxy(
    tmp_path: Path, setup: Setup, strategy: str, original: Callable[[socket.socket], tuple[str, int]], **extra: Any
) -> AsyncIterator[tuple[ClientProxy, Path]]:
    path = tmp_path / f"client-{strategy}.jsonl"
    log = ConnLog(str(path), "client_proxy")
    config = ClientProxyConfig(listen_port=0, haap=("127.0.0.1", setup.haap.port), strategy=strategy,
                               sources=SOURCES, haap_user=("127.0.0.1", setup.user_port),
                               connect_timeout_s=5, **extra)  # fmt: skip
    proxy = ClientProxy(config, log, original_dst=original)
    await proxy.start()
    try:
        yield proxy, path
    finally:
        await proxy.stop()
        log.close()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("strategy", ["mptcp", "robe-ips", "robe-downgrade"])
def test_the_client_proxy_relays_and_logs_closed_after_both_directions(tmp_path, strategy):
    async def main() -> None:
        async with (
            _setup(tmp_path) as setup,
            _client_proxy(tmp_path, setup, strategy, lambda _: ("127.0.0.1", setup.origin), first_data_wait_s=1.0) as (
                proxy,
                path,
            ),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            request = b"2000000\nGET / HTTP/1.1\r\n\r\n"
            writer.write(request)
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 20)
            _check_answer(answer, request, 2_000_000)
            writer.close()
            for _ in range(100):
                if any(e["event"] == "closed" for e in _lines(path)):
                    break
                await asyncio.sleep(0.02)
            events = _lines(path)
            assert [e["event"] for e in events] == ["accepted", "connected", "closed"]
            connected, closed = events[1], events[2]
            assert connected["first_bytes"] == len(request)  # rode with the header
            assert connected["dst"] == f"127.0.0.1:{setup.origin}" and connected["race"]
            assert closed["error"] is None and closed["bytes_up"] == len(request)
            assert closed["bytes_down"] == len(answer) and closed["path"] == connected["path"]
            assert closed["t_ns"] > connected["t_ns"]
            if strategy == "robe-ips":  # the proxy's history learnt the subflows' RTTs
                assert connected["ips_mode"] == "ips"
                learnt = shared_history().snapshot("127.0.0.0/24", time.monotonic())
                assert learnt and all(v["srtt_ms"] is not None for v in learnt.values()), learnt

    asyncio.run(main())


def test_the_client_proxy_does_not_wait_for_first_data(tmp_path):
    async def main() -> None:
        async with (
            _setup(tmp_path) as setup,
            _client_proxy(tmp_path, setup, "tcp", lambda _: ("127.0.0.1", setup.origin)) as (proxy, path),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            # The origin speaks first, but only once it has seen "HELLO?": we send nothing yet.
            await asyncio.sleep(0.1)
            connected = [e for e in _lines(path) if e["event"] == "connected"]
            assert connected and connected[0]["first_bytes"] == 0  # the header went alone, at once
            writer.write(b"HELLO?\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"220 hello\n"
            writer.write(b"10\n")
            writer.write_eof()
            _check_answer(await asyncio.wait_for(reader.read(), 5), b"10\n", 10)
            writer.close()

    asyncio.run(main())


def test_the_client_proxy_refuses_connections_that_were_not_redirected(tmp_path):
    async def main() -> None:
        async with (
            _setup(tmp_path) as setup,
            _client_proxy(tmp_path, setup, "tcp", lambda sock: sock.getsockname()[:2]) as (proxy, path),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                outcome: bytes | str = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                outcome = "reset"
            assert outcome in (b"", "reset")
            writer.close()
            await asyncio.sleep(0.05)
            refused = [e for e in _lines(path) if e["event"] == "refused"]
            assert refused and "not redirected" in refused[0]["reason"]

    asyncio.run(main())


def _start(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise AssertionError(f"no READY: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line[len("READY ") :])


def test_the_command_lines_start_serve_and_stop_on_sigterm(tmp_path):
    haap, ready = _start(["robe.proxy.haap", "--bind", "127.0.0.1", "--port", "0", "--user-port", "0",
                          "--allow", "127.0.0.0/8", "--log", str(tmp_path / "haap.jsonl")])  # fmt: skip
    try:
        assert ready["port"] > 0 and ready["user_port"] > 0 and ready["allow"] == ["127.0.0.0/8"]
        proxy, proxy_ready = _start(["robe.proxy.client_proxy", "--listen-port", "0", "--haap",
                                     f"127.0.0.1:{ready['port']}", "--haap-user", f"127.0.0.1:{ready['user_port']}",
                                     "--strategy", "robe-bbm", "--source", "127.0.0.1", "--source", "127.0.0.2",
                                     "--log", str(tmp_path / "client.jsonl")])  # fmt: skip
        try:
            assert proxy_ready["strategy"] == "robe-bbm" and proxy_ready["haap"] == f"127.0.0.1:{ready['user_port']}"
            # Not redirected (no iptables here): refused and logged. The proxy's RST may even beat
            # connect() returning on a busy machine.
            with suppress(ConnectionResetError), socket.create_connection(("127.0.0.1", proxy_ready["port"]),
                                                                            timeout=5) as sock:  # fmt: skip
                assert sock.recv(10) == b""
        finally:
            proxy.send_signal(signal.SIGTERM)
            assert proxy.wait(10) == 0
        client_events = _lines(tmp_path / "client.jsonl")
        assert [e["event"] for e in client_events] == ["accepted", "refused", "closed"]
    finally:
        haap.send_signal(signal.SIGTERM)
        assert haap.wait(10) == 0


def test_bad_command_lines_exit_2_naming_the_field():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "robe.proxy.haap", "--port", "1", "--allow", "198.18.0.1/15"],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)  # fmt: skip
    assert proc.returncode == 2 and "allow: '198.18.0.1/15'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "robe.proxy.client_proxy", "--listen-port", "1", "--haap",
                           "127.0.0.1:1", "--strategy", "robe-esim", "--source", "127.0.0.1"],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)  # fmt: skip
    assert proc.returncode == 2 and "haap_user=None" in proc.stderr


def test_a_userspace_connection_that_is_not_read_stops_taking_data(tmp_path):
    async def main() -> None:
        async with _setup(tmp_path) as setup:
            stream = await open_multipath("robe-downgrade", ("127.0.0.1", setup.user_port), SOURCES,
                                          _header(setup.origin) + b"40000000\n")  # fmt: skip
            stream.write_eof()
            await asyncio.sleep(1.0)  # the HAAP pushes 40 MB at us; we read nothing
            inner = stream.inner
            assert isinstance(inner, UserspaceStream)
            held = len(inner.driver.inbox)
            assert 0 < held <= RECV_HIGH_WATER + 512 * 1024, held
            received = bytearray()
            while chunk := await asyncio.wait_for(stream.read(), 20):
                received += chunk
            await stream.close()
            _check_answer(bytes(received), b"40000000\n", 40_000_000)

    asyncio.run(main())


def test_stopping_the_client_proxy_closes_and_logs_connections_in_flight(tmp_path):
    async def main() -> None:
        async with _setup(tmp_path) as setup:
            async with _client_proxy(tmp_path, setup, "robe-sim", lambda _: ("127.0.0.1", setup.origin)) as (
                proxy,
                path,
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"5\n")  # the origin waits for our EOF, which never comes
                await writer.drain()
                for _ in range(100):
                    if any(e["event"] == "connected" for e in _lines(path)):
                        break
                    await asyncio.sleep(0.02)
                await proxy.stop()
                try:
                    outcome: bytes | str = await asyncio.wait_for(reader.read(), 5)
                except ConnectionResetError:
                    outcome = "reset"
                assert outcome in (b"", "reset")
                writer.close()
            closed = [e for e in _lines(path) if e["event"] == "closed"]
            assert len(closed) == 1 and closed[0]["error"] == "shutdown"

    asyncio.run(main())


def test_the_haap_logs_a_destination_it_cannot_reach_and_resets_the_client(tmp_path):
    async def main() -> None:
        async with _setup(tmp_path) as setup:
            with socket.socket() as unused:
                unused.bind(("127.0.0.1", 0))
                closed_port = unused.getsockname()[1]  # nobody listens there
            stream = await open_multipath("mptcp", ("127.0.0.1", setup.haap.port), SOURCES, _header(closed_port))
            assert await _read_outcome(stream) in (b"", "reset")
            await asyncio.sleep(0.05)
            closed = [e for e in setup.lines() if e["event"] == "closed"]
            assert closed[-1]["error"].startswith(f"connecting to 127.0.0.1:{closed_port}: ")
            assert "refused" in closed[-1]["error"].lower()

    asyncio.run(main())


def test_the_fd_limit_is_raised_within_the_hard_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_fd_limit(2048) >= min(2048, hard) or soft >= 2048
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _syn_sent_to(port: int) -> list[str]:
    """Sockets of this machine's loopback still sending SYNs to ``port`` (ss, no root needed)."""
    command = ["ss", "-Htn", "state", "syn-sent", f"( dport = :{port} )"]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()


def test_a_client_that_leaves_during_the_set_up_abandons_it_and_robe_ips_learns(tmp_path):
    """wget gives up after 30 s on a connection whose SYNs go into a dead path: the proxy must drop the
    set-up then (not when the kernel gives up minutes later), and RobE_IPS's history must hold the path
    suspect from then on. A listener whose accept queue is full drops SYNs: a dead path on loopback."""
    dead = socket.socket()
    dead.bind(("127.0.1.1", 0))  # its own /24: the history's key for it is apart from the other tests'
    dead.listen(0)
    port = dead.getsockname()[1]
    fillers = [socket.create_connection(("127.0.1.1", port), timeout=5)]  # backlog 0: the accept queue is full

    async def main() -> None:
        log_path = tmp_path / "client-left.jsonl"
        log = ConnLog(str(log_path), "client_proxy")
        config = ClientProxyConfig(listen_port=0, haap=("127.0.1.1", port), strategy="robe-ips", sources=SOURCES)
        proxy = ClientProxy(config, log, original_dst=lambda _: ("198.18.0.1", 80))
        await proxy.start()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(1.5)  # unanswered past the SYN timeout (1 s)
            assert len(_syn_sent_to(port)) == 1
            assert not [e for e in _lines(log_path) if e["event"] == "closed"]
            writer.close()
            left = time.monotonic()
            for _ in range(100):
                if any(e["event"] == "closed" for e in _lines(log_path)):
                    break
                await asyncio.sleep(0.02)
            closed = [e for e in _lines(log_path) if e["event"] == "closed"]
            assert len(closed) == 1 and closed[0]["error"].startswith("client left"), closed
            assert time.monotonic() - left < 1.0
            assert _syn_sent_to(port) == []  # the attempt was reset, not left to the kernel
            history = shared_history()
            later = time.monotonic() + 25  # within a 30 s hold counted from the drop, not from the SYN
            assert history.snapshot("127.0.1.0/24", later)["127.0.0.1"]["suspect"]
            assert history.order("127.0.1.0/24", list(SOURCES), later) == ["127.0.0.2", "127.0.0.1"]
        finally:
            await proxy.stop()
            log.close()

    try:
        asyncio.run(main())
    finally:
        for sock in (*fillers, dead):
            sock.close()
