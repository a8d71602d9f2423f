"""``make bench-sweep``: what each extra network costs, and attempts per minute against the number of networks.

For each level N of ``--networks`` (default 1, 4, 16, 32, 64) the benchmark grows the set of
experiment 1 workers (Figure 3 network, ``robe serve``, ``robe agent``, timing canary: exactly what
a sweep builds) to N, then:

- **cost**: the time to build each network, the memory of all their processes (PSS, so shared
  pages count once) and their CPU while idle for ``--idle-s`` seconds, and the host's busy share;
- **load**: every network runs attempts of the ``paper`` profile at 0 % loss back to back for
  ``--seconds`` seconds (the busiest case: no attempt waits in a back-off), and we count attempts
  per minute, the canary error of every attempt (p50, p99, share flagged > 1 ms) and the set-up
  time's error against 1.5 x RTT (median).

Results go to ``results/sweep-bench/<UTC time>/``: ``bench.csv`` (one row per level),
``attempts.csv`` (every attempt), ``bench.md``, ``metadata.json`` and ``bench.png``.
Needs root; run it alone on the machine (timing).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.ownership import hand_to_invoking_user
from experiments import lifecycle
from experiments.canary import TOLERANCE_MS
from experiments.experiment1 import Worker, start_worker
from experiments.lifecycle import run_guarded
from experiments.metadata import PROJECT_ROOT, base_metadata, write_json
from experiments.profile import RunSpec, expand_runs, load_profile
from robe_lab.cliparse import command_parser
from topologies.cleanup import clean, processes_of
from topologies.fig3 import allow_congestion_control
from topologies.links import choose_backend

RESULTS_BASE = PROJECT_ROOT / "results" / "sweep-bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pss_kib(pid: int) -> int:
    """Proportional set size of a process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def host_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def idle_cost(seconds: float) -> dict[str, float]:
    """Memory and idle CPU of every process this run owns, and the host's busy share, over ``seconds``."""
    pids = [pid for pid, _ in processes_of(os.getpid())]
    before = {pid: cpu_ticks(pid) for pid in pids}
    busy0, total0 = host_busy_ticks()
    time.sleep(seconds)
    busy1, total1 = host_busy_ticks()
    used = sum(max(cpu_ticks(pid) - ticks, 0) for pid, ticks in before.items())
    return {
        "processes": len(pids),
        "pss_mib": sum(pss_kib(pid) for pid in pids) / 1024,
        "idle_cpu_pct": 100 * used / CLOCK_TICKS / seconds,
        "host_busy_pct": 100 * (busy1 - busy0) / max(total1 - total0, 1),
    }


def load_phase(workers: list[Worker], specs: list[RunSpec], seconds: float) -> list[dict[str, Any]]:
    """Every worker runs attempts from ``specs`` (cycled) until ``seconds`` have passed; every row."""
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    def work(worker: Worker) -> None:
        while time.monotonic() < deadline:
            with lock:
                spec = specs[next(counter) % len(specs)]
            row = worker.run(spec)
            with lock:
                rows.append(row)

    threads = [threading.Thread(target=work, args=(w,), name=f"bench{w.index}") for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rows


def summarise_load(rows: list[dict[str, Any]], seconds: float, rtt_ms: float) -> dict[str, float]:
    """Attempts per minute, canary error and set-up error figures of one level."""
    frame = pd.DataFrame(rows)
    canary = pd.to_numeric(frame["canary_ms"], errors="coerce")
    ok = frame[frame["status"] == "ok"]
    setup_error = pd.to_numeric(ok["setup_ms"], errors="coerce") - 1.5 * rtt_ms
    return {
        "attempts": len(frame),
        "attempts_per_min": 60 * len(frame) / seconds,
        "ok_share": len(ok) / len(frame) if len(frame) else 0.0,
        "canary_p50_ms": float(canary.quantile(0.5)),
        "canary_p99_ms": float(canary.quantile(0.99)),
        "canary_max_ms": float(canary.max()),
        "flagged_share": float((canary.abs() > TOLERANCE_MS).mean()),
        "setup_error_p50_ms": float(setup_error.median()) if len(setup_error) else float("nan"),
    }


#: bench.png's names of the error figures.
ERROR_LABELS = {"canary_p50_ms": "canary error p50", "canary_p99_ms": "canary error p99",
                "setup_error_p50_ms": "set-up error p50"}  # fmt: skip


def plot(table: pd.DataFrame, out: Path) -> Path:
    """bench.png: attempts per minute, canary and set-up error, and the idle cost against the number
    of networks (the project's figure style; same table, same bytes)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from analysis.style import TWO_COLUMN_IN, apply_theme, save

    apply_theme()
    fig, axes = plt.subplots(1, 3, figsize=(TWO_COLUMN_IN, 2.3), layout="constrained")
    sns.lineplot(data=table, x="networks", y="attempts_per_min", marker="o", ax=axes[0])
    axes[0].set(title="Attempts per minute (0 % loss)", ylabel="attempts / min")
    long = table.melt(id_vars="networks", value_vars=list(ERROR_LABELS), var_name="figure", value_name="ms")
    long["figure"] = long["figure"].map(ERROR_LABELS)
    sns.lineplot(data=long, x="networks", y="ms", hue="figure", style="figure", markers=True, dashes=False, ax=axes[1])
    axes[1].axhline(TOLERANCE_MS, color="red", linestyle="--", linewidth=0.8, label=f"{TOLERANCE_MS:g} ms tolerance")
    axes[1].set(title="Timing error while running", ylabel="ms")
    axes[1].legend(title=None, loc="upper left")
    sns.lineplot(data=table, x="networks", y="pss_mib", marker="o", ax=axes[2], label="memory, PSS (MiB)")
    cpu = axes[2].twinx()
    sns.lineplot(data=table, x="networks", y="idle_cpu_pct", marker="s", color="C1", ax=cpu,
                 label="idle CPU (% of a core)")  # fmt: skip
    cpu.set(ylabel="idle CPU (% of a core)", ylim=(-0.3, max(10.0, float(table["idle_cpu_pct"].max()) * 1.2)))
    cpu.grid(False)
    handles = [*axes[2].get_legend_handles_labels()[0], *cpu.get_legend_handles_labels()[0]]
    axes[2].legend(handles=handles, loc="upper left")
    cpu.get_legend().remove()
    axes[2].set(title="Idle cost of the networks", ylabel="memory, PSS (MiB)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(table["networks"]), [str(n) for n in table["networks"]])
        ax.set_xlabel("networks")
    return save(fig, out / "bench", formats=("png",))[0]


def markdown(table: pd.DataFrame) -> str:
    """bench.md: the table in Markdown."""
    columns = ["networks", "build_s_mean", "pss_mib", "idle_cpu_pct", "host_busy_idle_pct", "attempts_per_min",
               "canary_p50_ms", "canary_p99_ms", "flagged_share", "setup_error_p50_ms"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table[columns].itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def run_bench(levels: list[int], seconds: float, idle_s: float, out: Path) -> int:
    """Grow the networks level by level, measure each level, write the results."""
    profile = load_profile("paper")
    specs = [spec for spec in expand_runs(profile) if spec.loss_pct == 0]
    metadata = base_metadata("sweep-bench", {"networks": levels, "seconds": seconds, "idle_s": idle_s,
                                             "profile": profile.name, "loss_pct": 0})  # fmt: skip
    lifecycle.check_before_building("bench-sweep", out)  # root, MPTCP, the folder (the invoking user's)
    clean()
    backend = choose_backend()
    metadata["link_backend"] = backend.to_dict()
    allow_congestion_control("cubic")
    rows, attempts = [], []
    with ExitStack() as stack:
        workers: list[Worker] = []
        for level in levels:
            builds = []
            while len(workers) < level:
                started = time.monotonic()
                worker, _ = start_worker(len(workers), profile, backend, None, stack)
                builds.append(time.monotonic() - started)
                workers.append(worker)
            cost = idle_cost(idle_s)
            level_rows = load_phase(workers, specs, seconds)
            for row in level_rows:
                attempts.append({**row, "networks": level})
            summary = {"networks": level, "build_s_mean": statistics.fmean(builds) if builds else float("nan"),
                       **{k if k != "host_busy_pct" else "host_busy_idle_pct": v for k, v in cost.items()},
                       **summarise_load(level_rows, seconds, profile.path1.rtt_ms)}  # fmt: skip
            rows.append(summary)
            print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()),
                  flush=True)  # fmt: skip
            for name, table in (("bench.csv", rows), ("attempts.csv", attempts)):
                pd.DataFrame(table).to_csv(out / name, index=False)
                hand_to_invoking_user(out / name)
    metadata["figure"] = str(render(out).relative_to(out))
    write_json(out / "metadata.json", metadata)
    print((out / "bench.md").read_text())
    print(f"results in {out}")
    return 0


def render(folder: Path) -> Path:
    """bench.md and bench.png of a results folder from its stored bench.csv (``--replot``); bench.png."""
    table = pd.read_csv(folder / "bench.csv")
    (folder / "bench.md").write_text(markdown(table))
    hand_to_invoking_user(folder / "bench.md")
    return plot(table, folder)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = command_parser("experiments.bench_sweep", __doc__)
    parser.add_argument("--networks", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument("--seconds", type=float, default=45.0, help="load phase per level")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle measurement per level")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--replot", type=Path, default=None, metavar="FOLDER",
                        help="only redraw bench.png and bench.md of a stored results folder (no root)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.replot is not None:
        try:
            print(f"wrote {render(args.replot)}, {args.replot / 'bench.md'}")
        except (OSError, ValueError, KeyError) as err:
            print(f"error: {args.replot}: cannot redraw: {err}", file=sys.stderr)
            return 2
        return 0
    if sorted(args.networks) != args.networks or args.networks[0] < 1 or args.networks[-1] > 128:
        parser.error(f"--networks {args.networks}: increasing numbers within 1..128")
    out = args.out or RESULTS_BASE / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return run_guarded(lambda: run_bench(args.networks, args.seconds, args.idle_s, out), prefix="bench-sweep: ",
                       interrupted="interrupted; the networks were torn down, the levels measured so far are in "
                                   f"{out}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
