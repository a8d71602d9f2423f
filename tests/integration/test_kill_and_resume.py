"""A runner killed with -9 mid-sweep, then run again: no row lost or duplicated, the row the kill cut
short done again, the dead run's leftovers removed, and nothing of a live run beside it touched.
And experiment 2 under two Ctrl-C: wget killed, workers waited for, teardown completed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from experiments.experiment1 import ROW_FIELDS as EXP1_FIELDS
from experiments.experiment2 import ROW_FIELDS as EXP2_FIELDS
from experiments.profile import expand_runs, load_profile
from experiments.profile2 import expand_loads, load_profile2
from topologies.cleanup import owner_alive, processes_of
from topologies.fig3 import Fig3Config, Fig3Network
from topologies.links import PROJECT_ROOT
from topologies.shell import run

pytestmark = pytest.mark.root

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def _runner(module: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", module, "--profile", "quick", "--out", str(out), *extra]
    return subprocess.Popen(argv, cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def _rows(out: Path) -> list[list[str]]:
    path = out / "runs.csv"
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.reader(handle))[1:]


def _wait_rows(out: Path, proc: subprocess.Popen[str], count: int, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_rows(out)) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"fewer than {count} rows after {timeout_s} s"
        time.sleep(0.1)


def _cut_last_row(out: Path) -> str:
    """What a kill during the write of the last row leaves: that row cut after its status field."""
    path = out / "runs.csv"
    data = path.read_bytes()
    start = data.rstrip(b"\r\n").rfind(b"\n") + 1
    last = data[start:]
    cut = last.index(b",ok,") + len(b",ok,") if b",ok," in last else len(last) // 2
    path.write_bytes(data[: start + cut])
    return last.split(b",", 1)[0].decode()


def _named_leftovers(owner: int) -> tuple[list[str], list[str]]:
    namespaces = [n for n in run(["ip", "netns", "list"]).stdout.split() if n.startswith(f"rl-o{owner}-")]
    folders = [str(p) for p in Path("/tmp").glob(f"rl-o{owner}-*")]
    return namespaces, folders


@contextmanager
def _live_run() -> Iterator[tuple[Fig3Network, subprocess.Popen[str], set[int]]]:
    """A network of a run that is alive (this test process owns it), with a process inside."""
    with Fig3Network(Fig3Config()) as net:
        sleeper = net.popen(net.server, ["sleep", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
        pids = {pid for pid, _ in processes_of(os.getpid())}
        assert sleeper.pid in pids and net.server.pid in pids
        yield net, sleeper, pids


def _assert_untouched(net: Fig3Network, sleeper: subprocess.Popen[str], pids: set[int]) -> None:
    assert sleeper.poll() is None, "the live run's process was killed"
    assert all(owner_alive(pid) for pid in pids), [pid for pid in pids if not owner_alive(pid)]
    net.check_links()  # its emulators and links are in place


def _kill_then_rerun(module: str, out: Path, fields: list[str], run_ids: set[str], jobs: str) -> None:
    with _live_run() as (net, sleeper, live_pids):
        first = _runner(module, out, "-j", jobs)
        _wait_rows(out, first, 2)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        dead = first.pid
        time.sleep(0.5)
        left = processes_of(dead)
        assert left, "a killed run leaves its servers behind: the test would prove nothing"
        kept = _rows(out)
        cut_run = _cut_last_row(out)

        rerun = subprocess.run([sys.executable, "-m", module, "--profile", "quick", "--out", str(out), "-j", jobs],
                               cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                               check=False)  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "cut short" in rerun.stdout and f"owner {dead}" in rerun.stdout, rerun.stdout[-3000:]

        rows = _rows(out)
        assert all(len(row) == len(fields) for row in rows)
        ids = [row[0] for row in rows]
        assert sorted(ids) == sorted(run_ids)  # every run once: none lost, none twice
        assert ids.count(cut_run) == 1 and ids.index(cut_run) >= len(kept) - 1  # the cut row was done again
        assert list((out).glob("runs.csv.partial-*"))
        invocations = {row[fields.index("invocation")] for row in rows}
        assert len(invocations) == 2  # the killed run's rows and the rerun's, each named
        assert not processes_of(dead), processes_of(dead)
        assert _named_leftovers(dead) == ([], [])
        _assert_untouched(net, sleeper, live_pids)
    side = out / "connections.csv"
    if side.exists():  # experiment 2: each load's connections once, only of loads with a row
        with side.open(newline="") as handle:
            conns = [(row["run_id"], row["conn"]) for row in csv.DictReader(handle)]
        assert len(conns) == len(set(conns)) and {run_id for run_id, _ in conns} <= set(ids)
        assert cut_run in {run_id for run_id, _ in conns}


def test_experiment1_killed_mid_sweep_then_rerun_loses_nothing_and_cleans_only_the_dead_run(tmp_path):
    run_ids = {spec.run_id for spec in expand_runs(load_profile("quick"))}
    _kill_then_rerun("experiments.experiment1", tmp_path / "exp1", EXP1_FIELDS, run_ids, "2")


def test_experiment2_killed_mid_sweep_then_rerun_loses_nothing_and_cleans_only_the_dead_run(tmp_path):
    run_ids = {spec.run_id for spec in expand_loads(load_profile2("quick"))}
    _kill_then_rerun("experiments.experiment2", tmp_path / "exp2", EXP2_FIELDS, run_ids, "1")


def test_experiment2_ctrl_c_twice_kills_wget_waits_and_tears_everything_down(tmp_path):
    out = tmp_path / "exp2"
    proc = _runner("experiments.experiment2", out, "-j", "1")
    try:
        deadline = time.monotonic() + 180
        while not any(cmd.split()[:1] == ["wget"] for _, cmd in processes_of(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # a load is in flight
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # impatient: while it stops
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    assert "still" in stderr and "it finishes first" in stderr
    assert not processes_of(proc.pid), processes_of(proc.pid)
    assert _named_leftovers(proc.pid) == ([], [])
    assert all(len(row) == len(EXP2_FIELDS) and row[EXP2_FIELDS.index("status")] == "ok" for row in _rows(out))
