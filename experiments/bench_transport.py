"""``make bench``: the userspace RobE transport against kernel MPTCP on the same Figure 3 network.

Prints (and writes to ``results/bench/<stamp>/``): goodput of one connection over two paths
without delay, loss or rate limit (kernel ``mptcp`` against ``mptcp-user`` and ``robe-downgrade``,
and their ratio), CPU time per connection set-up, and memory per idle userspace connection.
The links are the emulated ones, so the emulator's own ceiling applies to both transports alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.metadata import PROJECT_ROOT, base_metadata, new_run_dir, write_json
from robe_lab.cliparse import command_parser
from topologies.fig3 import CLIENT_A1, CLIENT_A2, SERVER_B1, Fig3Config, Fig3Network, PathConfig
from topologies.links import choose_backend
from topologies.startup import STARTUP_FAILURES, one_line, wait_ready

PORT_KERNEL, PORT_USER = 5101, 5102

# Small programs run inside the hosts; each prints one JSON line.
KERNEL_SINK = f"""
import json, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{SERVER_B1}", {PORT_KERNEL})); s.listen(8); print("READY", flush=True)
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 20)
    if not b: break
    t0 = t0 or time.monotonic(); n += len(b)
print(json.dumps({{"bytes": n, "seconds": time.monotonic() - t0}}), flush=True)
"""

KERNEL_SOURCE = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.bind(("{CLIENT_A1}", 0)); s.connect(("{SERVER_B1}", {PORT_KERNEL}))
block = b"x" * (1 << 20)
for _ in range(int(sys.argv[1])): s.sendall(block)
s.close()
"""

USER_SINK = f"""
import asyncio, json, sys, time
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from robe.userspace import UserspaceServer
async def main():
    done = asyncio.get_running_loop().create_future()
    async def handle(conn):
        n, t0 = 0, None
        while chunk := await conn.read(1 << 20):
            t0 = t0 or time.monotonic(); n += len(chunk)
        done.set_result({{"bytes": n, "seconds": time.monotonic() - t0}})
    server = UserspaceServer(on_connection=handle)
    await server.listen("{SERVER_B1}", {PORT_USER}); print("READY", flush=True)
    print(json.dumps(await done), flush=True)
asyncio.run(main())
"""

USER_SOURCE = f"""
import asyncio, sys
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from robe.userspace import UserspaceClient
async def main():
    c = UserspaceClient(strategy=sys.argv[2], server=("{SERVER_B1}", {PORT_USER}),
                        sources=["{CLIENT_A1}", "{CLIENT_A2}"])
    await c.connect()
    await c.send_all(b"x" * (int(sys.argv[1]) << 20))
    c.close()
    await asyncio.Event().wait()  # the sink reports; the bench stops us
asyncio.run(main())
"""

IDLE_USER = f"""
import asyncio, json, resource, sys
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from robe.userspace import UserspaceClient
def rss_kib():
    return int(open("/proc/self/statm").read().split()[1]) * 4
async def main():
    n = int(sys.argv[1]); clients = []
    before = rss_kib(); cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        c = UserspaceClient(strategy="robe-downgrade", server=("{SERVER_B1}", {PORT_USER}),
                            sources=["{CLIENT_A1}", "{CLIENT_A2}"])
        await c.connect(b"x"); clients.append(c)
    await asyncio.sleep(0.5)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({{"connections": n, "rss_kib_per_connection": (rss_kib() - before) / n,
        "cpu_ms_per_setup": 1000 * (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / n}}), flush=True)
asyncio.run(main())
"""

IDLE_USER_SERVER = f"""
import asyncio, sys
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from robe.userspace import UserspaceServer
async def main():
    async def handle(conn):
        while await conn.read(): pass
    server = UserspaceServer(on_connection=handle)
    await server.listen("{SERVER_B1}", {PORT_USER}); print("READY", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

KERNEL_SETUPS = f"""
import json, resource, socket, sys
n = int(sys.argv[1]); cpu0 = resource.getrusage(resource.RUSAGE_SELF); keep = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    s.bind(("{CLIENT_A1}", 0)); s.connect(("{SERVER_B1}", {PORT_KERNEL})); s.sendall(b"x"); keep.append(s)
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"cpu_ms_per_setup": 1000 * (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / n}}))
"""

KERNEL_ACCEPTOR = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{SERVER_B1}", {PORT_KERNEL})); s.listen(1024); print("READY", flush=True); keep = []
while True:
    c, _ = s.accept(); keep.append(c)
"""


def _start(net: Fig3Network, host: Any, code: str, *args: str) -> subprocess.Popen[str]:
    proc = net.popen(host, [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)  # fmt: skip
    if code.count("READY"):
        wait_ready(proc, f"bench helper in {host.name}", "READY")
    return proc


def _last_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("bench helper printed no result")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def goodput(net: Fig3Network, transport: str, megabytes: int) -> float:
    """Mbit/s of one connection carrying ``megabytes`` MiB client -> server."""
    if transport == "mptcp":
        sink = _start(net, net.server, KERNEL_SINK)
        source = _start(net, net.client, KERNEL_SOURCE, str(megabytes))
    else:
        sink = _start(net, net.server, USER_SINK)
        source = _start(net, net.client, USER_SOURCE, str(megabytes), transport)
    result = _last_json(sink, 600)
    source.terminate()
    source.wait(timeout=10)
    return float(result["bytes"] * 8 / result["seconds"] / 1e6)


def setups(net: Fig3Network, count: int) -> dict[str, Any]:
    """CPU per connection set-up (kernel and userspace) and memory per idle userspace connection."""
    acceptor = _start(net, net.server, KERNEL_ACCEPTOR)
    kernel = _last_json(_start(net, net.client, KERNEL_SETUPS, str(count)), 300)
    acceptor.terminate()
    server = _start(net, net.server, IDLE_USER_SERVER)
    user = _last_json(_start(net, net.client, IDLE_USER, str(count)), 300)
    server.terminate()
    return {"kernel_mptcp_cpu_ms_per_setup": round(kernel["cpu_ms_per_setup"], 3),
            "userspace_cpu_ms_per_setup": round(user["cpu_ms_per_setup"], 3),
            "userspace_rss_kib_per_idle_connection": round(user["rss_kib_per_connection"], 1)}  # fmt: skip


def measure(megabytes: int, connections: int, arguments: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build Figure 3 with two unshaped paths, measure, print each figure; (figures, metadata)."""
    unshaped = PathConfig(rtt_ms=0, rate_mbit=None)
    figures: dict[str, Any] = {}
    started = time.monotonic()
    with Fig3Network(Fig3Config(path1=unshaped, path2=unshaped), choose_backend()) as net:
        for transport in ("mptcp", "mptcp-user", "robe-downgrade"):
            figures[f"goodput_mbit_{transport}"] = round(goodput(net, transport, megabytes), 1)
            print(f"goodput {transport:15s} {figures[f'goodput_mbit_{transport}']:8.1f} Mbit/s", flush=True)
        for transport in ("mptcp-user", "robe-downgrade"):
            ratio = figures[f"goodput_mbit_{transport}"] / figures["goodput_mbit_mptcp"]
            figures[f"goodput_ratio_{transport}_to_kernel"] = round(ratio, 3)
            print(f"ratio {transport:15s} {ratio:8.3f} of kernel MPTCP (target >= 0.5)", flush=True)
        figures.update(setups(net, connections))
        for key in (
            "kernel_mptcp_cpu_ms_per_setup",
            "userspace_cpu_ms_per_setup",
            "userspace_rss_kib_per_idle_connection",
        ):
            print(f"{key:40s} {figures[key]}", flush=True)
        metadata = base_metadata("bench-transport", arguments)
        metadata.update(network=net.describe(), wall_time_s=round(time.monotonic() - started, 1))
    return figures, metadata


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = command_parser("experiments.bench_transport", __doc__)
    parser.add_argument("--megabytes", type=int, default=200, help="MiB per goodput transfer")
    parser.add_argument("--connections", type=int, default=200, help="connections for the set-up and memory figures")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: make bench builds network namespaces and needs root: run 'sudo make bench'", file=sys.stderr)
        return 2
    if args.megabytes < 1 or args.connections < 1:
        parser.error("--megabytes and --connections must be >= 1")
    try:
        figures, metadata = measure(args.megabytes, args.connections, vars(args))
    except STARTUP_FAILURES as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    out = new_run_dir(Path(PROJECT_ROOT) / "results" / "bench", "transport")
    write_json(out / "metadata.json", metadata)
    write_json(out / "bench.json", figures)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
