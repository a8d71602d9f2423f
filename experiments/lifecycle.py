"""The outer shell of every runner (both sweeps, the shell, validations, benchmarks): options,
pre-flight checks, the results folder's lock, signals, one-line errors, exit status.

A sweep's ``main`` parses its options (the common ones: ``add_sweep_options``/``sweep_arguments``),
then hands its body to ``run_guarded``: SIGTERM (and SIGINT, which a shell starting us in the
background leaves ignored) unwinds like Ctrl-C; an expected failure (bad set-up, a part that did
not start) is one line and exit status 2; an interruption is one line and 130. Everything else is
a bug and keeps its traceback. ``run_in_folder`` runs the body after the pre-flight checks with
its results folder locked.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from analysis.ownership import make_results_dir
from experiments.profile import ProfileError, exit_on_profile_error
from experiments.runs_folder import ResultsFolderError, lock_folder
from robe_lab.signals import unwind_on
from topologies.cleanup import clean
from topologies.startup import STARTUP_FAILURES, one_line

if TYPE_CHECKING:
    from experiments.sweep import SweepResult

MPTCP_ENABLED = Path("/proc/sys/net/mptcp/enabled")


class ExperimentError(RuntimeError):
    """The experiment cannot start; the message says why (raised before any network is built)."""


#: Printed as one line (``error: ...``), exit status 2: bad set-up, or a part that did not start.
EXPECTED_FAILURES: tuple[type[Exception], ...] = (ExperimentError, *STARTUP_FAILURES)


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


class Named(Protocol):
    """A profile: anything with a ``name`` (its results folder's default name)."""

    @property
    def name(self) -> str: ...


P = TypeVar("P", bound=Named)


def add_sweep_options(parser: argparse.ArgumentParser, *, unit: str, results: str, jobs_default: int | None,
                      jobs_help: str) -> None:  # fmt: skip
    """The options every sweep takes: ``--profile``, ``-j``, ``--out``, ``--limit``, ``--allow-mixed``.

    ``unit`` names what the sweep runs (``attempt``, ``load``); ``results`` is the results base folder
    as the help shows it."""
    parser.add_argument("--profile", default="paper", help="profile name (experiments/profiles) or .toml path")
    parser.add_argument("-j", "--jobs", type=int, default=jobs_default, help=jobs_help)
    parser.add_argument("--out", type=Path, default=None, help=f"results folder (default {results}/<profile>)")
    parser.add_argument("--limit", type=int, default=None, help=f"run at most this many pending {unit}s")
    parser.add_argument("--allow-mixed", action="store_true",
                        help=f"add to a folder of {unit}s made by other code (rows name their invocation)")  # fmt: skip


def sweep_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, load: Callable[[str], P], results_base: Path,
    max_jobs: int, default_jobs: Callable[[P], int] | None = None,
) -> tuple[P, Path]:  # fmt: skip
    """The common options checked (``parser.error`` naming the bad one; a bad profile: one line, exit
    status 2): the profile, and the results folder. ``args.jobs`` is filled from ``default_jobs``
    when not given."""
    try:
        profile = load(args.profile)
    except ProfileError as err:
        exit_on_profile_error(parser.prog, err)
    if args.jobs is None and default_jobs is not None:
        args.jobs = default_jobs(profile)
    if not 1 <= args.jobs <= max_jobs:
        parser.error(f"--jobs={args.jobs}: must be 1..{max_jobs}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit={args.limit}: must be >= 1")
    out: Path = args.out if args.out is not None else results_base / profile.name
    return profile, out


def run_in_folder(target: str, out: Path, body: Callable[[], int], tools: Sequence[str] = ()) -> int:
    """``check_before_building``, then ``body`` with the results folder locked against other runners;
    a folder that cannot be used (locked, another profile, other code) is an ExperimentError."""
    check_before_building(target, out, tools)
    try:
        with lock_folder(out, target):
            return body()
    except (ResultsFolderError, ProfileError) as err:
        raise ExperimentError(str(err)) from None


def run_guarded(
    body: Callable[[], int],
    *,
    failures: tuple[type[Exception], ...] = EXPECTED_FAILURES,
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
