"""``make validate-links``: build Figure 3 and measure what the emulated links really deliver.

Path 1 and path 2 get RTT 20 and 40 ms at 10 Mbit/s; path 1 is then run at 0 %, 10 % and 50 %
loss (both directions, changed at run time without rebuilding). Per level and path it measures
RTT percentiles over >= 1000 replies, one-way loss in each direction over >= 10,000 probes, and at
0 % loss the delivered link rate in each direction during a saturating TCP transfer, plus the
userspace emulator's CPU time. It prints a table, writes ``checks.csv``, ``validation.json`` and
``metadata.json`` under ``results/link-validation/<run>/``, and exits non-zero if any figure is
outside tolerance: |RTT p50 error| <= 1 ms, |p99 error| <= 3 ms, loss inside the 99 % binomial
interval, rate within 5 %.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.ownership import hand_to_invoking_user
from analysis.stats import clopper_pearson, loss_within_interval, percentile
from experiments import lifecycle
from experiments.lifecycle import run_guarded
from experiments.metadata import PROJECT_ROOT, base_metadata, new_run_dir, write_json
from experiments.udpprobe import SendResult, read_reflector_summary, read_send_result
from robe_lab.cliparse import command_parser
from robe_lab.records import RecordError
from topologies.fig3 import CLIENT_A1, CLIENT_A2, SERVER_B1, Fig3Config, Fig3Network, PathConfig
from topologies.links import Backend, TapWireLink, choose_backend
from topologies.shell import in_netns, run
from topologies.startup import STARTUP_FAILURES, one_line, wait_ready

CLIENT_ADDRESS = {1: CLIENT_A1, 2: CLIENT_A2}
PROBE_PORT = 9000
IPERF_PORT = 5201
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Tolerances:
    """Pass limits of the validation."""

    rtt_p50_ms: float = 1.0
    rtt_p99_ms: float = 3.0
    rate_relative: float = 0.05
    loss_confidence: float = 0.99


@dataclass(frozen=True)
class ValidationPlan:
    """What to measure; defaults are the issue's acceptance procedure."""

    path_rtt_ms: tuple[float, float] = (20.0, 40.0)
    rate_mbit: float = 10.0
    loss_levels: tuple[float, ...] = (0.0, 10.0, 50.0)
    rtt_samples: int = 1000
    loss_probes: int = 10_000
    rtt_interval_ms: float = 2.0
    loss_interval_ms: float = 0.3
    throughput_s: float = 8.0
    tolerances: Tolerances = field(default_factory=Tolerances)

    def __post_init__(self) -> None:
        if any(not 0 <= level < 100 for level in self.loss_levels):
            raise ValueError(f"loss_levels={self.loss_levels!r}: each must be within 0..<100")
        if self.rtt_samples < 10 or self.loss_probes < 100:
            raise ValueError(f"rtt_samples={self.rtt_samples}, loss_probes={self.loss_probes}: too few to judge")
        if self.throughput_s < 4:
            raise ValueError(f"throughput_s={self.throughput_s}: needs >= 4 s (2 s warm-up, 1 s tail)")


@dataclass
class Check:
    """One measured figure against its target."""

    loss_level: float
    path: int
    metric: str
    measured: float
    target: float
    limit: str
    ok: bool
    samples: int
    detail: str = ""


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


class ProbeRound:
    """One reflector on the server, and concurrent probe senders on the client per path."""

    def __init__(self, net: Fig3Network) -> None:
        self.net = net
        self.reflector = net.popen(
            net.server,
            _python_module("experiments.udpprobe", "reflect", "--bind", SERVER_B1, "--port", str(PROBE_PORT)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_child_env(), cwd=PROJECT_ROOT, text=True,
        )  # fmt: skip
        wait_ready(self.reflector, f"probe reflector in {net.server.name}", "READY")

    def send(self, path: int, stream: int, count: int, interval_ms: float) -> subprocess.Popen[str]:
        """Start a sender bound to the path's client address."""
        argv = _python_module(
            "experiments.udpprobe", "send", "--src", CLIENT_ADDRESS[path], "--dst", SERVER_B1,
            "--port", str(PROBE_PORT), "--count", str(count), "--interval-ms", f"{interval_ms:g}",
            "--stream", str(stream), "--wait-ms", "1500",
        )  # fmt: skip
        return self.net.popen(self.net.client, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_child_env(), cwd=PROJECT_ROOT, text=True)  # fmt: skip

    @staticmethod
    def result(proc: subprocess.Popen[str]) -> SendResult:
        """Wait for a sender and read its result."""
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"probe sender failed ({proc.returncode}): {err.strip()}")
        return read_send_result(out)

    def received(self) -> dict[str, int]:
        """Stop the reflector; per stream, how many probes it received."""
        self.reflector.send_signal(signal.SIGTERM)
        out, err = self.reflector.communicate(timeout=10)
        try:
            return read_reflector_summary(out).received
        except RecordError as e:
            raise RuntimeError(f"probe reflector: {e}: {err.strip()}") from None


def rtt_checks(level: float, path: int, configured_rtt: float, rtt_ms: list[float], tol: Tolerances) -> list[Check]:
    """RTT p50/p99 error against the configured path RTT."""
    if not rtt_ms:
        return [Check(level, path, "rtt_p50_error_ms", math.nan, 0.0, "no replies", False, 0)]
    p50 = percentile(rtt_ms, 50) - configured_rtt
    p99 = percentile(rtt_ms, 99) - configured_rtt
    return [
        Check(level, path, "rtt_p50_error_ms", p50, 0.0, f"|e| <= {tol.rtt_p50_ms:g}", abs(p50) <= tol.rtt_p50_ms,
              len(rtt_ms), f"p50 {percentile(rtt_ms, 50):.2f} ms for RTT {configured_rtt:g} ms"),
        Check(level, path, "rtt_p99_error_ms", p99, 0.0, f"|e| <= {tol.rtt_p99_ms:g}", abs(p99) <= tol.rtt_p99_ms,
              len(rtt_ms), f"p99 {percentile(rtt_ms, 99):.2f} ms"),
    ]  # fmt: skip


def loss_check(level: float, path: int, direction: str, lost: int, total: int, configured_pct: float,
               tol: Tolerances) -> Check:  # fmt: skip
    """One-way loss against the configured probability (inside the binomial interval)."""
    low, high = clopper_pearson(lost, total, tol.loss_confidence)
    measured = 100.0 * lost / total if total else math.nan
    ok = total > 0 and loss_within_interval(lost, total, configured_pct, tol.loss_confidence)
    return Check(level, path, f"loss_{direction}_pct", measured, configured_pct,
                 f"{tol.loss_confidence:.0%} CI [{100 * low:.2f}, {100 * high:.2f}]", ok, total,
                 f"{lost}/{total} lost")  # fmt: skip


def _link_bytes(net: Fig3Network, host: Any, intf: str) -> int:
    info = json.loads(run(in_netns(host.pid, ["ip", "-j", "-s", "link", "show", "dev", intf])).stdout)
    return int(info[0]["stats64"]["rx"]["bytes"])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure_rates(net: Fig3Network, plan: ValidationPlan, direction: str) -> list[Check]:
    """Saturate both paths with one TCP flow each (up: client -> server, down: reverse); count the
    frame bytes arriving at the far end between 2 s and duration - 1 s; emulator CPU in that window."""
    servers, clients = [], []
    for path in (1, 2):
        port = str(IPERF_PORT + path)
        servers.append(net.popen(net.server, ["iperf3", "-s", "-1", "-p", port, "-B", SERVER_B1],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))  # fmt: skip
    time.sleep(0.5)
    for path in (1, 2):
        argv = ["iperf3", "-c", SERVER_B1, "-p", str(IPERF_PORT + path), "-B", CLIENT_ADDRESS[path],
                "-t", f"{plan.throughput_s:g}", "-J", "-C", net.config.congestion_control]  # fmt: skip
        if direction == "down":
            argv.append("-R")
        clients.append(net.popen(net.client, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    receiver = {1: (net.router, "r-a1"), 2: (net.router, "r-a2")} if direction == "up" else \
        {1: (net.client, "a1"), 2: (net.client, "a2")}  # fmt: skip
    emulators = {p: net.path_link(p) for p in (1, 2)}
    time.sleep(2.0)
    start = time.monotonic()
    bytes0 = {p: _link_bytes(net, *receiver[p]) for p in (1, 2)}
    cpu0 = {p: _cpu_seconds(link.wire.pid) for p, link in emulators.items()
            if isinstance(link, TapWireLink) and link.wire}  # fmt: skip
    time.sleep(plan.throughput_s - 3.0)
    elapsed = time.monotonic() - start
    bytes1 = {p: _link_bytes(net, *receiver[p]) for p in (1, 2)}
    cpu1 = {p: _cpu_seconds(link.wire.pid) for p, link in emulators.items()
            if isinstance(link, TapWireLink) and link.wire}  # fmt: skip
    checks = []
    for path, proc in zip((1, 2), clients, strict=True):
        out, _ = proc.communicate(timeout=plan.throughput_s + 30)
        goodput = math.nan
        if proc.returncode == 0:
            summary = json.loads(out)["end"]
            goodput = summary["sum_received"]["bits_per_second"] / 1e6
        rate = (bytes1[path] - bytes0[path]) * 8 / elapsed / 1e6
        ok = abs(rate - plan.rate_mbit) <= plan.tolerances.rate_relative * plan.rate_mbit
        cpu = 100 * (cpu1[path] - cpu0[path]) / elapsed if path in cpu0 else math.nan
        detail = f"TCP goodput {goodput:.2f} Mbit/s"
        if not math.isnan(cpu):
            detail += f"; emulator CPU {cpu:.1f} % of a core"
        checks.append(Check(0.0, path, f"rate_{direction}_mbit", rate, plan.rate_mbit,
                            f"within {plan.tolerances.rate_relative:.0%}", ok, 1, detail))  # fmt: skip
        checks.append(Check(0.0, path, f"emulator_cpu_{direction}_pct", cpu, math.nan, "reported", True, 1,
                            "utime+stime of the link's emulator while saturated"))  # fmt: skip
    for proc in servers:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return checks


def measure_level(net: Fig3Network, plan: ValidationPlan, level: float) -> list[Check]:
    """RTT and per-direction loss on both paths with path 1 at ``level`` % loss (both directions)."""
    tol = plan.tolerances
    configured_loss = {1: level, 2: 0.0}
    probes = ProbeRound(net)
    senders: dict[tuple[int, str], subprocess.Popen[str]] = {}
    for path in (1, 2):
        delivery = (1 - configured_loss[path] / 100) ** 2
        rtt_count = math.ceil(plan.rtt_samples / delivery * 1.15) + 20
        senders[(path, "rtt")] = probes.send(path, path * 10 + 1, rtt_count, plan.rtt_interval_ms)
    rtt_results = {key: probes.result(proc) for key, proc in senders.items()}
    for path in (1, 2):
        forward = 1 - configured_loss[path] / 100
        count = math.ceil(plan.loss_probes / forward)
        senders[(path, "loss")] = probes.send(path, path * 10 + 2, count, plan.loss_interval_ms)
    loss_results = {path: probes.result(senders[(path, "loss")]) for path in (1, 2)}
    received = probes.received()
    checks: list[Check] = []
    for path in (1, 2):
        rtt = rtt_results[(path, "rtt")].rtt_ms
        checks += rtt_checks(level, path, plan.path_rtt_ms[path - 1], rtt, tol)
        result = loss_results[path]
        arrived = int(received.get(str(path * 10 + 2), 0))
        checks.append(loss_check(level, path, "up", result.sent - arrived, result.sent,
                                 configured_loss[path], tol))  # fmt: skip
        checks.append(loss_check(level, path, "down", arrived - result.replies, arrived,
                                 configured_loss[path], tol))  # fmt: skip
    return checks


def print_table(checks: list[Check]) -> None:
    """Human-readable fidelity table."""
    print(f"\n{'loss':>5} {'path':>4}  {'metric':<22} {'measured':>10} {'target':>8}  {'limit':<28} {'n':>6}  result")
    for c in checks:
        target = "" if math.isnan(c.target) else f"{c.target:g}"
        verdict = "PASS" if c.ok else "FAIL"
        if c.limit == "reported":
            verdict = ""
        print(f"{c.loss_level:>4g}% {c.path:>4}  {c.metric:<22} {c.measured:>10.3f} {target:>8}  "
              f"{c.limit:<28} {c.samples:>6}  {verdict} {c.detail}")  # fmt: skip


def validate(plan: ValidationPlan, out_dir: Path, backend_setting: str | None = None) -> tuple[bool, Path]:
    """Run the whole validation; return (all passed, result folder)."""
    backend = choose_backend(backend_setting)
    print(f"link backend: {backend.backend.value} ({backend.reason}; netem probe: {backend.netem_probe})")
    run_dir = new_run_dir(out_dir, backend.backend.value)
    metadata = base_metadata("link-validation", {"plan": asdict(plan), "backend_setting": backend_setting})
    metadata["link_backend"] = backend.to_dict()
    write_json(run_dir / "metadata.json", metadata)
    checks: list[Check] = []
    interrupted = False
    started = time.monotonic()
    paths = [PathConfig(rtt_ms=rtt, rate_mbit=plan.rate_mbit, loss_direction="both") for rtt in plan.path_rtt_ms]
    try:
        with Fig3Network(Fig3Config(path1=paths[0], path2=paths[1]), backend) as net:
            metadata["network"] = net.describe()
            write_json(run_dir / "metadata.json", metadata)
            for level in plan.loss_levels:
                net.set_path(1, PathConfig(rtt_ms=plan.path_rtt_ms[0], rate_mbit=plan.rate_mbit,
                                           loss_pct=level, loss_direction="both"))  # fmt: skip
                print(f"[{time.monotonic() - started:6.1f} s] path 1 loss {level:g} %: RTT and loss probes ...",
                      flush=True)  # fmt: skip
                checks += measure_level(net, plan, level)
                net.check_links()
                if level == 0:
                    for direction in ("up", "down"):
                        print(f"[{time.monotonic() - started:6.1f} s] rate, {direction}link, both paths ...",
                              flush=True)  # fmt: skip
                        checks += measure_rates(net, plan, direction)
                    net.check_links()
            if backend.backend is Backend.USERSPACE:
                metadata["emulator_stats"] = {
                    f"path{p}": link.stats() for p in (1, 2) if isinstance(link := net.path_link(p), TapWireLink)
                }
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: network torn down; keeping the figures measured so far", file=sys.stderr)
    except STARTUP_FAILURES as err:
        metadata["error"] = one_line(err)
        write_json(run_dir / "metadata.json", metadata)
        raise
    metadata["interrupted"] = interrupted
    metadata["wall_time_s"] = round(time.monotonic() - started, 1)
    write_json(run_dir / "metadata.json", metadata)
    write_json(run_dir / "validation.json", [asdict(c) for c in checks])
    with (run_dir / "checks.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(Check.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(c) for c in checks)
    hand_to_invoking_user(run_dir / "checks.csv")
    print_table(checks)
    passed = bool(checks) and not interrupted and all(c.ok for c in checks)
    return passed, run_dir


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = command_parser("experiments.validate_links", __doc__)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "link-validation",
                        help="parent folder of the result folder (default: results/link-validation)")  # fmt: skip
    parser.add_argument("--backend", default=None, help="netem, userspace or auto (default: $LINK_BACKEND or auto)")
    parser.add_argument("--rtt-samples", type=int, default=1000, help="RTT replies wanted per path and level")
    parser.add_argument("--loss-probes", type=int, default=10_000, help="probes per direction, path and level")
    parser.add_argument("--loss-levels", default="0,10,50", help="path 1 loss levels in percent, comma-separated")
    parser.add_argument("--throughput-s", type=float, default=8.0, help="duration of each rate test")
    args = parser.parse_args(argv)
    try:
        levels = tuple(float(x) for x in args.loss_levels.split(","))
        plan = ValidationPlan(loss_levels=levels, rtt_samples=args.rtt_samples, loss_probes=args.loss_probes,
                              throughput_s=args.throughput_s)  # fmt: skip
    except ValueError as err:
        parser.error(str(err))
    return run_guarded(lambda: _validate_and_print(plan, args.out, args.backend), prefix="validate-links: ",
                       interrupted="interrupted; the network was torn down")  # fmt: skip


def _validate_and_print(plan: ValidationPlan, out: Path, backend: str | None) -> int:
    lifecycle.check_before_building("validate-links", out)
    passed, run_dir = validate(plan, out, backend)
    print(f"\nresults: {run_dir}")
    print(
        "link validation PASSED" if passed else "link validation FAILED",
        file=sys.stdout if passed else sys.stderr,
    )
    return 0 if passed else 1


if __name__ == "__main__":
    threading.current_thread().name = "validate-links"
    sys.exit(main())
