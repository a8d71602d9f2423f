"""The outer shell of every runner (both sweeps, the shell): signals, one-line errors, exit status.

A runner's ``main`` parses its options, then hands its body to ``run_guarded``: SIGTERM (and
SIGINT, which a shell starting us in the background leaves ignored) unwinds like Ctrl-C; an
expected failure (bad set-up, a part that did not start) is one line and exit status 2; an
interruption is one line and 130. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.ownership import make_results_dir
from robe_lab.signals import unwind_on
from topologies.cleanup import clean
from topologies.startup import one_line

if TYPE_CHECKING:
    from experiments.sweep import SweepResult

MPTCP_ENABLED = Path("/proc/sys/net/mptcp/enabled")


class ExperimentError(RuntimeError):
    """The experiment cannot start; the message says why (raised before any network is built)."""


def check_before_building(target: str, out: Path, tools: Sequence[str] = ()) -> None:
    """Everything a runner can check without a network or its folder's lock: root, the programs it
    runs, MPTCP switched on, a writable results folder (created, handed to the sudo user).

    ``target`` names the make target in the root hint (``sudo make <target>``).
    """
    if os.geteuid() != 0:
        raise ExperimentError(f"{target} builds network namespaces and needs root: run 'sudo make {target}'")
    for tool in tools:
        if shutil.which(tool) is None:
            raise ExperimentError(f"{tool} not found: run 'make setup' (it installs the Debian packages)")
    if not MPTCP_ENABLED.exists():
        raise ExperimentError("this kernel has no MPTCP (no /proc/sys/net/mptcp): Linux >= 5.6 with CONFIG_MPTCP")
    if MPTCP_ENABLED.read_text().strip() != "1":
        raise ExperimentError("MPTCP is switched off (net.mptcp.enabled=0): sudo sysctl -w net.mptcp.enabled=1")
    try:
        make_results_dir(out)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ExperimentError(f"results folder {out}: not writable ({err.strerror or err})") from None


def run_guarded(
    body: Callable[[], int],
    *,
    failures: tuple[type[Exception], ...],
    prefix: str = "",
    interrupted: str = "interrupted; every finished row is kept and nothing was left behind",
) -> int:
    """Run ``body`` with Ctrl-C and SIGTERM unwinding; its status, 2 for ``failures``, 130 if interrupted.

    ``prefix`` starts every message (e.g. ``"experiment2: "``).
    """
    unwind_on(signal.SIGTERM, signal.SIGINT)
    try:
        return body()
    except failures as err:
        print(f"{prefix}error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}{interrupted}", file=sys.stderr)
        return 130


def report_end(result: SweepResult, unit: str, out: Path) -> int:
    """What a sweep prints when it ends (counts, unwritten rows, how to resume); its exit status."""
    print(f"{unit}: {result.counts}; results in {out}", flush=True)
    for line in result.report():
        print(line, file=sys.stderr, flush=True)
    if result.interrupted and not result.unwritten:
        print("rerun the same command to resume", flush=True)
    return result.exit_status()


def announce(title: str, unit: str, counts: tuple[int, int, int], runs_csv: Path, jobs: int) -> bool:
    """Print the sweep's plan (``counts``: total, stored, pending); False when nothing is pending, else
    first remove what dead runs left behind (never a live run's) and return True."""
    total, stored, pending = counts
    print(f"{title}: {total} {unit}s, {stored} already in {runs_csv}, {pending} to run with {jobs} worker(s)",
          flush=True)  # fmt: skip
    if not pending:
        print(f"nothing to do: every {unit} is stored", flush=True)
        return False
    leftovers = clean()
    if not leftovers.empty():
        print(leftovers.summary(), flush=True)
    return True
