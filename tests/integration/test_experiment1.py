"""Experiment 1 end to end with the quick profile: rows, outcomes, resume, plots, Ctrl-C."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from topologies.cleanup import find_our_processes, processes_of
from topologies.links import PROJECT_ROOT
from topologies.shell import run

pytestmark = pytest.mark.root


def _experiment(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "experiments.experiment1", "--profile", "quick", "--out", str(out), *extra]
    return subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "runs.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_quick_profile_end_to_end_then_resume_then_plots(tmp_path):
    out = tmp_path / "quick"
    first = _experiment(out, "-j", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    rows = _rows(out)
    assert len(rows) == 36 and len({r["run_id"] for r in rows}) == 36
    outcome = Counter((r["strategy"], r["loss_pct"], r["status"]) for r in rows)
    for strategy in ("tcp", "mptcp"):
        assert outcome[(strategy, "100", "failed")] == 3
    for strategy in ("robe-sim", "robe-timer"):
        assert outcome[(strategy, "100", "ok")] == 3
    zero = [float(r["setup_ms"]) for r in rows if r["loss_pct"] == "0"]
    assert len(zero) == 12 and all(29.5 < t < 40 for t in zero), zero
    timer_dead = [float(r["setup_ms"]) for r in rows if r["strategy"] == "robe-timer" and r["loss_pct"] == "100"]
    assert all(1000 < t < 1100 for t in timer_dead), timer_dead

    meta = json.loads((out / "metadata.json").read_text())
    assert meta["complete"] is True and meta["profile"]["name"] == "quick"
    assert meta["link_backend"]["backend"] in ("netem", "userspace")
    assert meta["network"]["sysctls"]["client"]["net.ipv4.tcp_syn_retries"] == "2"
    assert meta["invocations"][0]["preflight"]["worker0"]["path1"]["replies"] >= 90

    again = _experiment(out, "-j", "3")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(_rows(out)) == 36

    plots = subprocess.run([sys.executable, "-m", "analysis.plots", "--quiet", str(out)], capture_output=True,
                           text=True, cwd=PROJECT_ROOT, check=False)  # fmt: skip
    assert plots.returncode == 0, plots.stderr
    for name in ("figure8.png", "figure8.pdf", "summary.csv", "report.md"):
        assert (out / name).stat().st_size > 0
    assert "PASS: 100 % loss, robe-sim: every run connects" in (out / "report.md").read_text()

    # make compare against the stored paper run: the quick profile differs in its fields, not its kind.
    paper = PROJECT_ROOT / "results" / "experiment1" / "paper"
    argv = [sys.executable, "-m", "analysis.compare", str(paper), str(out), "--out", str(tmp_path / "compare")]
    compared = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT_ROOT, check=False)
    assert compared.returncode == 0, compared.stderr
    assert "profile.name" in compared.stdout and "quick" in compared.stdout
    assert (tmp_path / "compare" / "compare.md").exists()


def test_ctrl_c_keeps_finished_rows_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "interrupted"
    before = {pid for pid, cmd in find_our_processes()}
    argv = [sys.executable, "-m", "experiments.experiment1", "--profile", "quick", "--out", str(out), "-j", "2"]
    proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "runs.csv").exists() and len(_rows(out)) >= 3:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    kept = _rows(out)
    assert 3 <= len(kept) < 36 and all(r["status"] in ("ok", "failed") for r in kept)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["invocations"][-1]["interrupted"] is True and meta["complete"] is False
    assert not [(pid, cmd) for pid, cmd in find_our_processes() if pid not in before]
    assert not processes_of(proc.pid)  # its own, found by the owner in their names and environment
    assert "rl-" not in run(["ip", "netns", "list"]).stdout
    # Resuming runs only what is missing.
    resumed = _experiment(out, "-j", "3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(_rows(out)) == 36


TIMELINE_PROFILE = """
name = "tiny-outage"
strategies = ["mptcp", "robe-ips-timer"]
loss_pct = [0]
loss_direction = "both"
repetitions = 1
seed = 3
tcp_syn_linear_timeouts = 0
tcp_syn_retries = 1
duration_s = 8
interval_s = 0.5
hold_ms = 200
[path1]
rtt_ms = 20
[path2]
rtt_ms = 40
[[schedule]]
at_s = 2
path = 1
loss_pct = 100
[[schedule]]
at_s = 5
path = 1
loss_pct = 0
"""


def test_time_varying_profile_runs_on_schedule_then_resumes_then_plots(tmp_path):
    profile = tmp_path / "tiny-outage.toml"
    profile.write_text(TIMELINE_PROFILE)
    out = tmp_path / "tiny"
    argv = [sys.executable, "-m", "experiments.experiment1", "--profile", str(profile), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    rows = _rows(out)
    assert len(rows) == 32 and {r["status"] for r in rows} <= {"ok", "failed"}
    for row in rows:  # each attempt started when due (the agent answers concurrently)
        assert abs(float(row["attempt_start_s"]) - float(row["due_s"])) < 0.1, row
    mptcp_down = [r for r in rows if r["strategy"] == "mptcp" and 2.0 <= float(r["due_s"]) < 4.0]
    assert mptcp_down and all(r["status"] == "failed" for r in mptcp_down)  # SYNs at 0 and 1 s both lost
    timer = [r for r in rows if r["strategy"] == "robe-ips-timer"]
    assert all(r["status"] == "ok" for r in timer)
    learnt = [r for r in timer if 3.5 <= float(r["due_s"]) < 5.0]
    assert all(r["winner_path"] == "2" and r["path_order"] == "2;1" for r in learnt), learnt
    assert all(float(r["setup_ms"]) < 70 for r in learnt)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["timeline"] is True and meta["complete"] is True
    again = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60, check=False, env=env)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    plots = subprocess.run([sys.executable, "-m", "analysis.plots", "--quiet", str(out)], capture_output=True,
                           text=True, cwd=PROJECT_ROOT, check=False, env=env)  # fmt: skip
    assert plots.returncode == 0, plots.stderr
    assert (out / "outage.png").exists() and "robe-ips-timer never fails" in (out / "report.md").read_text()
