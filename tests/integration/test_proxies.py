"""Experiment 2's proxies on real namespaces: client -> client proxy -> HAAP -> origin (Figure 7).

Three namespaces of our own (``rl-o<pid>-px-c``, ``-h``, ``-o``): the client with two links to
the HAAP (path 0, the default route, and path 1; policy routing per source address, MPTCP subflow
endpoints on both addresses), the HAAP with a service address reachable over both links, and an
origin server in the emulated internet (198.18.200.0/24). The client proxy installs its iptables
REDIRECT in the client namespace; curl and Python clients there talk to the origin's address.
The client-HAAP links are plain veths (no delay) for the correctness tests; the last test builds
a second network whose access links are emulated (``topologies.tapwire``) as in Figure 7: LTE
(path 0, default route) 40 ms RTT, DSL/WiFi (path 1) 20 ms, 10 Mbit/s each.
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

from robe.proxy import connlog
from topologies import shell
from topologies.linkparams import LinkParams
from topologies.links import TapWireProcess, tapwire_command

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
PREFIX = f"rl-o{os.getpid()}-px"  # owned by this process: a clean-up after a crash finds it
PATH0, PATH1 = "10.201.1.1", "10.201.2.1"  # client source addresses: LTE (default route), DSL/WiFi
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


@dataclass(frozen=True)
class Names:
    """The namespaces and scratch folder of one test network (all ours: prefix ``rl-o<pid>-px``)."""

    tag: str

    @property
    def client(self) -> str:
        return f"{PREFIX}-{self.tag}c"

    @property
    def haap(self) -> str:
        return f"{PREFIX}-{self.tag}h"

    @property
    def origin(self) -> str:
        return f"{PREFIX}-{self.tag}o"

    @property
    def all(self) -> tuple[str, str, str]:
        return self.client, self.haap, self.origin

    @property
    def tmp(self) -> Path:
        return Path(f"/tmp/{PREFIX}-{self.tag}")


def namespace_commands(names: Names) -> list[list[str]]:
    """The namespaces, with loopback up."""
    return [["ip", "netns", "add", ns] for ns in names.all] + [_ns(ns, "link", "set", "lo", "up") for ns in names.all]


def veth_path_commands(names: Names) -> list[list[str]]:
    """Both client-HAAP links as plain veths (the shaped network uses emulator TAP devices instead)."""
    return [["ip", "link", "add", f"c{i}", "netns", names.client, "type", "veth", "peer", "name", f"h{i}", "netns",
             names.haap] for i in (1, 2)]  # fmt: skip


def network_commands(names: Names) -> list[list[str]]:
    """Addresses, routes and MPTCP settings, once the client-HAAP links c1/h1 and c2/h2 exist."""
    client, haap, origin = names.all
    cmds = [
        ["ip", "link", "add", "ho", "netns", haap, "type", "veth", "peer", "name", "oh", "netns", origin],
        _ns(client, "addr", "add", f"{PATH0}/24", "dev", "c1"),
        _ns(client, "addr", "add", f"{PATH1}/24", "dev", "c2"),
        _ns(haap, "addr", "add", "10.201.1.2/24", "dev", "h1"),
        _ns(haap, "addr", "add", "10.201.2.2/24", "dev", "h2"),
        _ns(haap, "addr", "add", f"{HAAP_ADDR}/32", "dev", "lo"),
        _ns(haap, "addr", "add", "198.18.200.1/24", "dev", "ho"),
        _ns(origin, "addr", "add", f"{ORIGIN_ADDR}/24", "dev", "oh"),
    ]
    cmds += [_ns(ns, "link", "set", dev, "up") for ns, dev in
             ((client, "c1"), (client, "c2"), (haap, "h1"), (haap, "h2"), (haap, "ho"), (origin, "oh"))]  # fmt: skip
    cmds += [
        _ns(client, "route", "add", "default", "via", "10.201.1.2", "dev", "c1"),  # path 0: the default route
        _ns(client, "rule", "add", "from", PATH0, "table", "101"),
        _ns(client, "route", "add", "default", "via", "10.201.1.2", "dev", "c1", "table", "101"),
        _ns(client, "rule", "add", "from", PATH1, "table", "102"),
        _ns(client, "route", "add", "default", "via", "10.201.2.2", "dev", "c2", "table", "102"),
        _ns(origin, "route", "add", "default", "via", "198.18.200.1"),
        _ns(client, "mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2"),
        _ns(client, "mptcp", "endpoint", "add", PATH0, "dev", "c1", "subflow"),
        _ns(client, "mptcp", "endpoint", "add", PATH1, "dev", "c2", "subflow"),
        _ns(haap, "mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2"),
    ]
    return cmds


@dataclass
class Started:
    proc: subprocess.Popen[str]
    ready: dict[str, Any]


class Net:
    """One running test network and the processes we started in it."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.procs: list[subprocess.Popen[str]] = []
        self.wires: list[TapWireProcess] = []

    def start(self, ns: str, argv: list[str]) -> Started:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
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

    def teardown(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for wire in self.wires:
            with contextlib.suppress(Exception):
                wire.stop()
        for ns in self.names.all:
            pids = shell.run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:  # leftovers inside our own namespaces only
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            shell.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.names.tmp, ignore_errors=True)


@contextlib.contextmanager
def build_network(names: Names, shaped: dict[int, LinkParams] | None = None, big: bool = True) -> Iterator[Net]:
    """Build the network (``shaped``: emulated client-HAAP links by path), start origin and HAAP."""
    net = Net(names)
    try:
        names.tmp.mkdir(parents=True, exist_ok=True)
        for argv in namespace_commands(names):
            shell.run(argv)
        if shaped is None:
            for argv in veth_path_commands(names):
                shell.run(argv)
        else:
            for i, params in shaped.items():
                argv = tapwire_command(tag=f"{PREFIX}-{names.tag}w{i}", a_netns=f"/var/run/netns/{names.client}",
                                       a_name=f"c{i}", b_netns=f"/var/run/netns/{names.haap}", b_name=f"h{i}",
                                       seed=i)  # fmt: skip
                net.wires.append(TapWireProcess(argv, params))
        for argv in network_commands(names):
            shell.run(argv)
        data = names.tmp / "big.bin"
        data.write_bytes(os.urandom(BIG if big else 1))
        (names.tmp / "origin.py").write_text(ORIGIN_SCRIPT)
        (names.tmp / "many.py").write_text(MANY_SCRIPT)
        net.start(names.origin, [sys.executable, str(names.tmp / "origin.py"), str(data), ORIGIN_ADDR])
        haap = net.start(names.haap, [sys.executable, "-m", "robe.proxy.haap", "--bind", "0.0.0.0", "--port",
                                      str(HAAP_PORT), "--user-port", str(USER_PORT), "--allow", "198.18.0.0/15",
                                      "--log", str(names.tmp / "haap.jsonl")])  # fmt: skip
        assert haap.ready["port"] == HAAP_PORT and haap.ready["user_port"] == USER_PORT
        yield net
    finally:
        net.teardown()


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with build_network(Names("")) as network:
        yield network


def _lines(path: Path) -> list[dict[str, Any]]:
    """The log's complete lines: a proxy may be half-way through writing the last one."""
    return connlog.read_lines(path, 0)[0]


@contextlib.contextmanager
def client_proxy(net: Net, strategy: str) -> Iterator[Path]:
    log = net.names.tmp / f"client-{strategy}.jsonl"
    log.unlink(missing_ok=True)
    started = net.start(net.names.client, [
        sys.executable, "-m", "robe.proxy.client_proxy", "--listen-port", str(PROXY_PORT),
        "--haap", f"{HAAP_ADDR}:{HAAP_PORT}", "--haap-user", f"{HAAP_ADDR}:{USER_PORT}", "--strategy", strategy,
        "--source", PATH0, "--source", PATH1, "--log", str(log), "--iptables",
        "--redirect-net", "198.18.0.0/15", "--redirect-net", "192.0.2.0/24", "--connect-timeout", "10",
    ])  # fmt: skip
    assert started.ready["redirect"] == f"rl-proxy-{PROXY_PORT}"
    try:
        yield log
    finally:
        assert net.stop(started.proc) == 0
        rules = net.run(net.names.client, ["iptables", "-w", "-t", "nat", "-S"]).stdout
        assert "rl-proxy" not in rules, rules  # removed on SIGTERM


def _haap_since(net: Net, mark: int) -> list[dict[str, Any]]:
    return [e for e in _lines(net.names.tmp / "haap.jsonl") if e["t_ns"] >= mark]


STRATEGIES = ["mptcp", "robe-sim", "robe-downgrade"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_50_mb_download_through_both_proxies_is_byte_identical(net, strategy):
    out = net.names.tmp / f"out-{strategy}.bin"
    mark = time.monotonic_ns()
    with client_proxy(net, strategy) as log:
        done = net.run(net.names.client, ["curl", "-sS", "--max-time", "120", "-o", str(out), "-w",
                                          "%{time_total}", f"http://{ORIGIN_ADDR}/big"])  # fmt: skip
        assert done.returncode == 0, done.stderr
        seconds = float(done.stdout)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == hashlib.sha256((net.names.tmp / "big.bin").read_bytes()).hexdigest()
    events = _lines(log)
    closed = [e for e in events if e["event"] == "closed"]
    assert len(closed) == 1 and closed[0]["error"] is None, events
    assert closed[0]["dst"] == f"{ORIGIN_ADDR}:80" and closed[0]["bytes_down"] >= BIG
    assert closed[0]["subflows"] == 2, closed  # the second path joined: aggregation over both links
    haap = [e for e in _haap_since(net, mark) if e["event"] == "closed" and e["dst"]]
    assert len(haap) == 1 and haap[0]["bytes_down"] == closed[0]["bytes_down"]
    setup_ms = next(e for e in events if e["event"] == "connected")["setup_ns"] / 1e6
    print(f"\n{strategy}: 50 MiB in {seconds:.2f} s ({BIG * 8 / seconds / 1e6:.0f} Mbit/s), "
          f"winner path {closed[0]['path']}, set-up {setup_ms:.2f} ms")  # fmt: skip


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_200_concurrent_connections_all_complete(net, strategy):
    with client_proxy(net, strategy) as log:
        done = net.run(net.names.client, [sys.executable, str(net.names.tmp / "many.py"), "200", ORIGIN_ADDR,
                                          "20000"])  # fmt: skip
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
        done = net.run(net.names.client, ["curl", "-sS", "--max-time", "20", f"http://{FORBIDDEN_ADDR}/"])
        time.sleep(0.2)
    assert done.returncode != 0  # reset or empty reply: nothing from the forbidden destination
    refused = [e for e in _haap_since(net, mark) if e["event"] == "refused"]
    assert len(refused) == 1 and refused[0]["dst"] == f"{FORBIDDEN_ADDR}:80"
    assert "outside the allowed networks (198.18.0.0/15)" in refused[0]["reason"]
    closed = [e for e in _lines(log) if e["event"] == "closed"]
    assert closed and closed[0]["error"] is not None


SELF_HEADERS = """
import socket, sys
sys.path.insert(0, sys.argv[1])
from robe.proxy.convert import Destination, encode
import ipaddress
for port in (int(sys.argv[3]), 80):
    with socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10) as sock:
        sock.sendall(encode(Destination(ipaddress.ip_address("198.18.200.1"), port)) * 20 + b"x")
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
"""


def test_the_haap_never_connects_to_its_own_addresses(net):
    """198.18.200.1 is the HAAP's own (internet-side) address, inside its allow-list 198.18.0.0/15."""
    mark = time.monotonic_ns()
    done = net.run(net.names.client, [sys.executable, "-c", SELF_HEADERS, str(ROOT), HAAP_ADDR, str(HAAP_PORT)])
    assert done.returncode == 0, done.stderr
    time.sleep(0.2)
    events = _haap_since(net, mark)
    assert sum(e["event"] == "accepted" for e in events) == 2, events  # the two clients, never itself
    reasons = [e["reason"] for e in events if e["event"] == "refused"]
    assert len(reasons) == 2
    assert f"198.18.200.1:{HAAP_PORT}: the HAAP itself" in reasons[0]
    assert "an address of the HAAP's own host" in reasons[1]


def dead_path_commands(net: Net, add: bool) -> list[list[str]]:
    """Drop everything the client sends to the HAAP on path 0 (the default route) while ``add``.

    Matched by addresses, not by ``-o c1``: connections redirected to the local proxy still carry
    their original route's output interface in the filter table.
    """
    op = "-A" if add else "-D"
    return [["ip", "netns", "exec", net.names.client, "iptables", "-w", op, "OUTPUT", "-s", PATH0, "-d", HAAP_ADDR,
             "-j", "DROP"]]  # fmt: skip


@pytest.mark.parametrize("strategy", ["robe-sim", "robe-timer", "robe-downgrade"])
def test_with_the_default_path_dead_robe_still_loads_over_the_other_path(net, strategy):
    mark = time.monotonic_ns()
    for argv in dead_path_commands(net, True):
        shell.run(argv)
    try:
        with client_proxy(net, strategy) as log:
            done = net.run(net.names.client, ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w",
                                              "%{time_total}", f"http://{ORIGIN_ADDR}/small/1000"])  # fmt: skip
            time.sleep(0.1)
    finally:
        for argv in dead_path_commands(net, False):
            shell.run(argv)
    assert done.returncode == 0, done.stderr
    events = _lines(log)
    closed = [e for e in events if e["event"] == "closed"]
    assert len(closed) == 1 and closed[0]["error"] is None and closed[0]["path"] == 1, events
    accepted = [e for e in _haap_since(net, mark) if e["event"] == "accepted"]
    assert {e["peer"].split(":")[0] for e in accepted} == {PATH1}
    print(f"\n{strategy}, default path dead: page in {float(done.stdout) * 1000:.1f} ms over path 1")


# Figure 7's access links: LTE (path 0, the default route) 40 ms RTT, DSL/WiFi (path 1) 20 ms, 10 Mbit/s.
PAPER_LINKS = {1: LinkParams.for_rtt(rtt_ms=40, rate_mbit=10), 2: LinkParams.for_rtt(rtt_ms=20, rate_mbit=10)}
FETCHES = 5


def test_on_the_papers_access_links_robe_sets_up_over_the_faster_path():
    """Through both proxies on emulated 40 / 20 ms links: MPTCP pays the default path's RTT, RobE the fastest."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    summary = {}
    with build_network(Names("s"), shaped=PAPER_LINKS, big=False) as net:
        for strategy in ("mptcp", "robe-sim", "robe-downgrade"):
            pages = []
            with client_proxy(net, strategy) as log:
                for _ in range(FETCHES):
                    done = net.run(net.names.client, ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w",
                                                      "%{time_total}", f"http://{ORIGIN_ADDR}/small/1000"])  # fmt: skip
                    assert done.returncode == 0, done.stderr
                    pages.append(float(done.stdout) * 1000)
                time.sleep(0.2)
            connected = [e for e in _lines(log) if e["event"] == "connected"]
            assert len(connected) == FETCHES
            setups = sorted(e["setup_ns"] / 1e6 for e in connected)
            summary[strategy] = {"paths": sorted({e["path"] for e in connected}), "setup_ms": setups[FETCHES // 2],
                                 "page_ms": sorted(pages)[FETCHES // 2]}  # fmt: skip
    print(f"\nmedians over {FETCHES} fetches (setup: client proxy -> HAAP; page: curl time_total): {summary}")
    assert summary["mptcp"]["paths"] == [0] and 40 <= summary["mptcp"]["setup_ms"] < 48
    for robe in ("robe-sim", "robe-downgrade"):
        assert summary[robe]["paths"] == [1] and 20 <= summary[robe]["setup_ms"] < 28
        assert summary[robe]["page_ms"] < summary["mptcp"]["page_ms"] - 15
