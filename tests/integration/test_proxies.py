"""Experiment 2's proxies on real namespaces: client -> client proxy -> HAAP -> origin (Figure 7).

Three namespaces of our own (``rl-pxtest-<pid>-c``, ``-h``, ``-o``): the client with two links to
the HAAP (path 0, the default route, and path 1; policy routing per source address, MPTCP subflow
endpoints on both addresses), the HAAP with a service address reachable over both links, and an
origin server in the emulated internet (198.18.200.0/24). The client proxy installs its iptables
REDIRECT in the client namespace; curl and Python clients there talk to the origin's address.
Links are plain veths (no delay): these tests check correctness, not timing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from topologies import shell

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
PREFIX = f"rl-pxtest-{os.getpid()}"
CLIENT, HAAP, ORIGIN = f"{PREFIX}-c", f"{PREFIX}-h", f"{PREFIX}-o"
NAMESPACES = (CLIENT, HAAP, ORIGIN)
TMP = Path(f"/tmp/{PREFIX}")
PATH0, PATH1 = "10.201.1.1", "10.201.2.1"  # client source addresses: LTE (default), DSL/WiFi
HAAP_ADDR = "10.201.0.1"
ORIGIN_ADDR = "198.18.200.2"
FORBIDDEN_ADDR = "192.0.2.10"  # redirected by the client proxy, refused by the HAAP
HAAP_PORT, USER_PORT, PROXY_PORT = 8000, 8001, 3129
BIG = 50 * 1024 * 1024

ORIGIN_SCRIPT = r"""
import asyncio, sys

BIG = sys.argv[1]

async def handle(reader, writer):
    try:
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ")[1].decode()
        if path == "/big":
            with open(BIG, "rb") as f:
                body_len = f.seek(0, 2)
                f.seek(0)
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % body_len)
                while chunk := f.read(1 << 20):
                    writer.write(chunk)
                    await writer.drain()
        elif path.startswith("/small/"):
            n = int(path.split("/")[2])
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % n + b"s" * n)
        else:
            writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, sys.argv[2], 80, backlog=1024)
    print("READY", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

MANY_SCRIPT = r"""
import asyncio, json, sys, time

N, HOST, SIZE = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

async def one(i):
    reader, writer = await asyncio.open_connection(HOST, 80)
    writer.write(b"GET /small/%d HTTP/1.0\r\nHost: origin\r\n\r\n" % SIZE)
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200") or len(body) != SIZE:
        raise ValueError(f"bad answer {head[:40]!r} {len(body)}")

async def main():
    start = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(N)), return_exceptions=True)
    failed = [repr(r) for r in results if r is not None]
    print(json.dumps({"ok": N - len(failed), "failed": failed[:5], "elapsed_s": time.monotonic() - start}))

asyncio.run(main())
"""


def _ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "-n", ns, *argv]


def network_commands() -> list[list[str]]:
    """Namespaces, links, addresses, routes and MPTCP settings of the test network."""
    cmds = [["ip", "netns", "add", ns] for ns in NAMESPACES]
    cmds += [_ns(ns, "link", "set", "lo", "up") for ns in NAMESPACES]
    cmds += [
        ["ip", "link", "add", "c1", "netns", CLIENT, "type", "veth", "peer", "name", "h1", "netns", HAAP],
        ["ip", "link", "add", "c2", "netns", CLIENT, "type", "veth", "peer", "name", "h2", "netns", HAAP],
        ["ip", "link", "add", "ho", "netns", HAAP, "type", "veth", "peer", "name", "oh", "netns", ORIGIN],
        _ns(CLIENT, "addr", "add", f"{PATH0}/24", "dev", "c1"),
        _ns(CLIENT, "addr", "add", f"{PATH1}/24", "dev", "c2"),
        _ns(HAAP, "addr", "add", "10.201.1.2/24", "dev", "h1"),
        _ns(HAAP, "addr", "add", "10.201.2.2/24", "dev", "h2"),
        _ns(HAAP, "addr", "add", f"{HAAP_ADDR}/32", "dev", "lo"),
        _ns(HAAP, "addr", "add", "198.18.200.1/24", "dev", "ho"),
        _ns(ORIGIN, "addr", "add", f"{ORIGIN_ADDR}/24", "dev", "oh"),
    ]
    cmds += [_ns(ns, "link", "set", dev, "up") for ns, dev in
             ((CLIENT, "c1"), (CLIENT, "c2"), (HAAP, "h1"), (HAAP, "h2"), (HAAP, "ho"), (ORIGIN, "oh"))]  # fmt: skip
    cmds += [
        _ns(CLIENT, "route", "add", "default", "via", "10.201.1.2", "dev", "c1"),  # path 0: the default route
        _ns(CLIENT, "rule", "add", "from", PATH0, "table", "101"),
        _ns(CLIENT, "route", "add", "default", "via", "10.201.1.2", "dev", "c1", "table", "101"),
        _ns(CLIENT, "rule", "add", "from", PATH1, "table", "102"),
        _ns(CLIENT, "route", "add", "default", "via", "10.201.2.2", "dev", "c2", "table", "102"),
        _ns(ORIGIN, "route", "add", "default", "via", "198.18.200.1"),
        _ns(CLIENT, "mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2"),
        _ns(CLIENT, "mptcp", "endpoint", "add", PATH0, "dev", "c1", "subflow"),
        _ns(CLIENT, "mptcp", "endpoint", "add", PATH1, "dev", "c2", "subflow"),
        _ns(HAAP, "mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2"),
    ]
    return cmds


@dataclass
class Started:
    proc: subprocess.Popen[str]
    ready: dict[str, Any]


class Net:
    """The running test network and the processes we started in it."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, ns: str, argv: list[str], timeout: float = 20) -> Started:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = proc.stdout.readline()
        if not line.startswith("READY") or time.monotonic() > deadline:
            self.stop(proc)
            raise AssertionError(f"{argv}: no READY ({line!r}): {proc.stderr.read() if proc.stderr else ''}")
        rest = line[len("READY") :].strip()
        return Started(proc, json.loads(rest) if rest else {})

    def stop(self, proc: subprocess.Popen[str]) -> int:
        """SIGTERM, then SIGKILL after 10 s; by PID only."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def run(self, ns: str, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return shell.run(["ip", "netns", "exec", ns, *argv], check=False, timeout=timeout)


def _teardown(net: Net) -> None:
    for proc in list(net.procs):
        with contextlib.suppress(Exception):
            net.stop(proc)
    for ns in NAMESPACES:
        pids = shell.run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:  # leftovers inside our own namespaces only
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        shell.run(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(TMP, ignore_errors=True)


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    network = Net()
    try:
        TMP.mkdir(parents=True, exist_ok=True)
        for argv in network_commands():
            shell.run(argv)
        big = TMP / "big.bin"
        big.write_bytes(os.urandom(BIG))
        (TMP / "origin.py").write_text(ORIGIN_SCRIPT)
        (TMP / "many.py").write_text(MANY_SCRIPT)
        network.start(ORIGIN, [sys.executable, str(TMP / "origin.py"), str(big), ORIGIN_ADDR])
        haap = network.start(HAAP, [sys.executable, "-m", "robe.proxy.haap", "--bind", "0.0.0.0", "--port",
                                    str(HAAP_PORT), "--user-port", str(USER_PORT), "--allow", "198.18.0.0/15",
                                    "--log", str(TMP / "haap.jsonl")])  # fmt: skip
        assert haap.ready["port"] == HAAP_PORT and haap.ready["user_port"] == USER_PORT
        yield network
    finally:
        _teardown(network)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@contextlib.contextmanager
def client_proxy(net: Net, strategy: str) -> Iterator[Path]:
    log = TMP / f"client-{strategy}.jsonl"
    log.unlink(missing_ok=True)
    started = net.start(CLIENT, [sys.executable, "-m", "robe.proxy.client_proxy", "--listen-port", str(PROXY_PORT),
                                 "--haap", f"{HAAP_ADDR}:{HAAP_PORT}", "--haap-user", f"{HAAP_ADDR}:{USER_PORT}",
                                 "--strategy", strategy, "--source", PATH0, "--source", PATH1, "--log", str(log),
                                 "--iptables", "--redirect-net", "198.18.0.0/15", "--redirect-net", "192.0.2.0/24",
                                 "--connect-timeout", "10"])  # fmt: skip
    assert started.ready["redirect"] == f"rl-proxy-{PROXY_PORT}"
    try:
        yield log
    finally:
        assert net.stop(started.proc) == 0
        rules = net.run(CLIENT, ["iptables", "-w", "-t", "nat", "-S"]).stdout
        assert "rl-proxy" not in rules, rules  # removed on SIGTERM


def _haap_since(mark: int) -> list[dict[str, Any]]:
    return [e for e in _lines(TMP / "haap.jsonl") if e["t_ns"] >= mark]


STRATEGIES = ["mptcp", "robe-sim", "robe-downgrade"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_50_mb_download_through_both_proxies_is_byte_identical(net, strategy):
    out = TMP / f"out-{strategy}.bin"
    mark = time.monotonic_ns()
    with client_proxy(net, strategy) as log:
        done = net.run(CLIENT, ["curl", "-sS", "--max-time", "120", "-o", str(out), "-w", "%{time_total}",
                                f"http://{ORIGIN_ADDR}/big"])  # fmt: skip
        assert done.returncode == 0, done.stderr
        seconds = float(done.stdout)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == hashlib.sha256((TMP / "big.bin").read_bytes()).hexdigest()
    events = _lines(log)
    closed = [e for e in events if e["event"] == "closed"]
    assert len(closed) == 1 and closed[0]["error"] is None, events
    assert closed[0]["dst"] == f"{ORIGIN_ADDR}:80" and closed[0]["bytes_down"] >= BIG
    assert closed[0]["subflows"] == 2, closed  # the second path joined: aggregation over both links
    haap = [e for e in _haap_since(mark) if e["event"] == "closed" and e["dst"]]
    assert len(haap) == 1 and haap[0]["bytes_down"] == closed[0]["bytes_down"]
    setup_ms = next(e for e in events if e["event"] == "connected")["setup_ns"] / 1e6
    print(f"\n{strategy}: 50 MiB in {seconds:.2f} s ({BIG * 8 / seconds / 1e6:.0f} Mbit/s), "
          f"winner path {closed[0]['path']}, set-up {setup_ms:.2f} ms")  # fmt: skip


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_200_concurrent_connections_all_complete(net, strategy):
    with client_proxy(net, strategy) as log:
        done = net.run(CLIENT, [sys.executable, str(TMP / "many.py"), "200", ORIGIN_ADDR, "20000"])
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        for _ in range(100):
            if sum(e["event"] == "closed" for e in _lines(log)) >= 200:
                break
            time.sleep(0.05)
    assert result["ok"] == 200, result
    closed = [e for e in _lines(log) if e["event"] == "closed"]
    assert len(closed) == 200 and all(e["error"] is None for e in closed), [e for e in closed if e["error"]][:3]
    paths = sorted({e["path"] for e in closed})
    print(f"\n{strategy}: 200 concurrent connections in {result['elapsed_s']:.2f} s, winner paths {paths}")


def test_a_destination_outside_the_allowed_network_is_refused(net):
    mark = time.monotonic_ns()
    with client_proxy(net, "robe-sim") as log:
        done = net.run(CLIENT, ["curl", "-sS", "--max-time", "20", f"http://{FORBIDDEN_ADDR}/"])
        time.sleep(0.2)
    assert done.returncode != 0  # reset or empty reply: nothing from the forbidden destination
    refused = [e for e in _haap_since(mark) if e["event"] == "refused"]
    assert len(refused) == 1 and refused[0]["dst"] == f"{FORBIDDEN_ADDR}:80"
    assert "outside the allowed networks (198.18.0.0/15)" in refused[0]["reason"]
    closed = [e for e in _lines(log) if e["event"] == "closed"]
    assert closed and closed[0]["error"] is not None


def dead_path_commands(add: bool) -> list[list[str]]:
    """Drop everything the client sends to the HAAP on path 0 (the default route) while ``add``.

    Matched by addresses, not by ``-o c1``: connections redirected to the local proxy still carry
    their original route's output interface in the filter table.
    """
    op = "-A" if add else "-D"
    return [["ip", "netns", "exec", CLIENT, "iptables", "-w", op, "OUTPUT", "-s", PATH0, "-d", HAAP_ADDR, "-j", "DROP"]]


@pytest.mark.parametrize("strategy", ["robe-sim", "robe-timer", "robe-downgrade"])
def test_with_the_default_path_dead_robe_still_loads_over_the_other_path(net, strategy):
    mark = time.monotonic_ns()
    for argv in dead_path_commands(True):
        shell.run(argv)
    try:
        with client_proxy(net, strategy) as log:
            done = net.run(CLIENT, ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{time_total}",
                                    f"http://{ORIGIN_ADDR}/small/1000"])  # fmt: skip
            time.sleep(0.1)
    finally:
        for argv in dead_path_commands(False):
            shell.run(argv)
    assert done.returncode == 0, done.stderr
    events = _lines(log)
    closed = [e for e in events if e["event"] == "closed"]
    assert len(closed) == 1 and closed[0]["error"] is None and closed[0]["path"] == 1, events
    accepted = [e for e in _haap_since(mark) if e["event"] == "accepted"]
    assert {e["peer"].split(":")[0] for e in accepted} == {PATH1}
    print(f"\n{strategy}, default path dead: page in {float(done.stdout) * 1000:.1f} ms over path 1")
