"""Results written by a sudo run belong to the invoking user; make plots/compare never need root."""

import os
import subprocess
import threading
from pathlib import Path

import pytest

from analysis.ownership import hand_to_invoking_user, invoking_user, make_results_dir
from analysis.schema import EXPERIMENT1
from experiments.metadata import write_json
from experiments.sweep import append_row

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@needs_root
def test_a_sudo_run_hands_its_results_to_the_invoking_user(tmp_path, monkeypatch):
    monkeypatch.setenv("SUDO_UID", "65534")
    monkeypatch.setenv("SUDO_GID", "65534")
    assert invoking_user() == (65534, 65534)
    folder = make_results_dir(tmp_path / "results" / "experiment1" / "p")
    write_json(folder / "metadata.json", {"kind": "experiment1"})
    row: dict[str, object] = dict.fromkeys(EXPERIMENT1.names, "")
    row.update(run_id="a", strategy="tcp", loss_pct="0", repetition=0, seed=1, worker=0, status="failed")
    append_row(folder / "runs.csv", row, threading.Lock(), EXPERIMENT1)
    for path in (tmp_path / "results", tmp_path / "results" / "experiment1", folder, folder / "metadata.json",
                 folder / "runs.csv"):  # fmt: skip
        assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534), path
    assert tmp_path.stat().st_uid == 0  # what existed before is left alone


def test_without_sudo_nothing_changes_owner(tmp_path, monkeypatch):
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_GID", raising=False)
    assert invoking_user() is None
    path = tmp_path / "f"
    path.write_text("x")
    owner = path.stat().st_uid
    hand_to_invoking_user(path)
    assert path.stat().st_uid == owner
    monkeypatch.setenv("SUDO_UID", "0")
    monkeypatch.setenv("SUDO_GID", "0")
    assert invoking_user() is None  # sudo from root


def test_make_plots_and_compare_never_run_the_debian_set_up(tmp_path):
    dry = subprocess.run(["make", "-n", "plots", "compare", "RUNS=a b"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "scripts/setup.sh --venv-only" in dry and "scripts/setup.sh\n" not in dry
    # The venv-only set-up with an up-to-date .venv: no sudo, no apt-get, exit 0.
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("sudo", "apt-get"):
        (fake / tool).write_text(f"#!/bin/sh\necho {tool} >> {tmp_path}/called\nexit 1\n")
        (fake / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "scripts/setup.sh", "--venv-only"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "called").exists()
