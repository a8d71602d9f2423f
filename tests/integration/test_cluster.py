"""Experiment 1 on a Dask cluster: the same rows as a local run, and a killed engine worker loses
no row and doubles none (its in-flight attempts run again elsewhere, recorded)."""

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from analysis.experiment1_cells import model_settings
from analysis.schema import EXPERIMENT1, read_runs
from topologies.cleanup import find_our_processes
from topologies.links import PROJECT_ROOT

pytestmark = pytest.mark.root
ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def _argv(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.experiment1", "--profile", "quick", "--out", str(out), *extra]


def _rows(out: Path) -> list[dict[str, str]]:
    path = out / "runs.csv"
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _header(out: Path) -> list[str]:
    with (out / "runs.csv").open(newline="") as handle:
        return next(csv.reader(handle))


def test_quick_profile_on_a_local_cluster_gives_the_rows_of_a_local_run(tmp_path):
    here, cluster = tmp_path / "here", tmp_path / "cluster"
    local = subprocess.run(_argv(here, "-j", "4"), capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
                           env=ENV, check=False)  # fmt: skip
    assert local.returncode == 0, local.stderr[-2000:]
    dask = subprocess.run(_argv(cluster, "--cluster", "local:2", "-j", "2"), capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=600, env=ENV, check=False)  # fmt: skip
    assert dask.returncode == 0, dask.stderr[-3000:]
    assert "cluster local:2: 2 worker(s)" in dask.stdout
    rows_here, rows_cluster = _rows(here), _rows(cluster)
    assert len(rows_cluster) == len(rows_here) == 36
    assert _header(cluster) == _header(here) == EXPERIMENT1.names
    typed_here, typed_cluster = read_runs(here), read_runs(cluster)  # both read strictly through the schema
    assert (typed_cluster.dtypes == typed_here.dtypes).all() and len(typed_cluster) == 36
    assert {r["run_id"] for r in rows_cluster} == {r["run_id"] for r in rows_here}
    # Same outcomes where the loss pattern decides them (dead default path; clean paths).
    for rows in (rows_here, rows_cluster):
        outcome = Counter((r["strategy"], r["loss_pct"], r["status"]) for r in rows)
        assert outcome[("tcp", "100", "failed")] == outcome[("mptcp", "100", "failed")] == 3
        assert outcome[("robe-sim", "100", "ok")] == 3
        zero = [float(r["setup_ms"]) for r in rows if r["loss_pct"] == "0"]
        # Every set-up took the emulated RTT (links are emulated on the engine workers too); the median is
        # near it. One attempt may be late under two engine workers plus a local run on two cores.
        assert len(zero) == 12 and min(zero) > 29.5 and statistics.median(zero) < 40, zero
        assert all(r["canary_flagged"] in ("0", "1") and r["host"] and r["kernel"] for r in rows)
    engines = {r["engine_worker"] for r in rows_cluster}
    assert len(engines) == 2 and all(e.startswith("tcp://127.0.0.1:") for e in engines)
    assert {r["engine_worker"] for r in rows_here} == {""}
    meta = json.loads((cluster / "metadata.json").read_text())
    assert meta["complete"] is True
    invocation = meta["invocations"][-1]
    assert invocation["cluster"]["spec"] == "local:2" and len(invocation["cluster"]["workers"]) == 2
    assert sum(invocation["networks_closed"].values()) >= 2
    assert invocation["canary"]["rows_with_canary"] == 36
    # One pre-flight report per network, which the model reads as it reads a local run's.
    assert invocation["preflight"] and all("path1" in report for report in invocation["preflight"].values())
    assert model_settings(meta).rtt_source.startswith("measured")
    assert not [cmd for pid, cmd in find_our_processes() if str(cluster) in cmd]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (Dask's nannies spawn the workers from their own thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def test_killing_an_engine_worker_mid_sweep_loses_no_row_and_doubles_none(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_argv(out, "--cluster", "local:2", "-j", "2"), cwd=PROJECT_ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # Long-first order: the 100 % loss attempts of tcp and mptcp (7 s each) run first; kill a
        # worker while its networks are in the middle of them.
        deadline = time.monotonic() + 180
        victim = None
        while time.monotonic() < deadline and victim is None:
            time.sleep(0.5)
            rows = _rows(out)
            workers = [pid for pid in _children(proc.pid) if b"spawn_main" in _cmdline(pid)]
            if rows and workers:
                time.sleep(1.0)
                victim = workers[0]
        assert victim is not None, "no engine worker or no row within 180 s"
        os.kill(victim, signal.SIGKILL)
        _stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    rows = _rows(out)
    ids = Counter(r["run_id"] for r in rows)
    assert len(ids) == 36 and set(ids.values()) == {1}, ids
    assert all(r["status"] in ("ok", "failed") for r in rows)
    invocation = json.loads((out / "metadata.json").read_text())["invocations"][-1]
    # The killed worker had attempts in flight: they ran again on another worker, and say so.
    retried = [r for r in rows if int(r["retries"] or 0) > 0]
    assert retried, "no row records a retry"
    assert set(invocation["retried"]) == {r["run_id"] for r in retried}
    assert all(record["retries"] >= 1 for record in invocation["retried"].values())
    # The killed worker's networks were removed (dead owner), nothing of this run is left.
    assert not [cmd for pid, cmd in find_our_processes() if f"rl-o{victim}-" in cmd]
