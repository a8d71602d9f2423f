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
from typing import Any

from experiments import lifecycle
from experiments.bench_programs import SERVERS
from experiments.lifecycle import run_guarded
from experiments.metadata import PROJECT_ROOT, base_metadata, new_run_dir, write_json
from robe_lab.cliparse import command_parser
from robe_lab.paths import results_dir
from topologies.fig3 import Fig3Config, Fig3Network, PathConfig
from topologies.links import choose_backend
from topologies.startup import wait_ready


def _start(net: Fig3Network, host: Any, role: str, *args: str) -> subprocess.Popen[str]:
    """One of ``experiments.bench_programs``' roles in ``host`` (waits for READY from a server)."""
    argv = [sys.executable, "-m", "experiments.bench_programs", role, *args]
    proc = net.popen(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
    if role in SERVERS:
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
        sink = _start(net, net.server, "kernel-sink")
        source = _start(net, net.client, "kernel-source", str(megabytes))
    else:
        sink = _start(net, net.server, "user-sink")
        source = _start(net, net.client, "user-source", str(megabytes), transport)
    result = _last_json(sink, 600)
    source.terminate()
    source.wait(timeout=10)
    return float(result["bytes"] * 8 / result["seconds"] / 1e6)


def setups(net: Fig3Network, count: int) -> dict[str, Any]:
    """CPU per connection set-up (kernel and userspace) and memory per idle userspace connection."""
    acceptor = _start(net, net.server, "kernel-acceptor")
    kernel = _last_json(_start(net, net.client, "kernel-setups", str(count)), 300)
    acceptor.terminate()
    server = _start(net, net.server, "idle-user-server")
    user = _last_json(_start(net, net.client, "idle-user", str(count)), 300)
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
    if args.megabytes < 1 or args.connections < 1:
        parser.error("--megabytes and --connections must be >= 1")
    return run_guarded(lambda: _measure_and_store(args.megabytes, args.connections, vars(args)), prefix="bench: ",
                       interrupted="interrupted; the network was torn down, nothing stored")  # fmt: skip


def _measure_and_store(megabytes: int, connections: int, arguments: dict[str, Any]) -> int:
    base = results_dir() / "bench"
    lifecycle.check_before_building("bench", base)
    figures, metadata = measure(megabytes, connections, arguments)
    out = new_run_dir(base, "transport")
    write_json(out / "metadata.json", metadata)
    write_json(out / "bench.json", figures)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
