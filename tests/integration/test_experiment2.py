"""Experiment 2 end to end (root): the quick profile on real Figure 7 networks, proxies, replay and wget."""

import csv
import json

import pytest

from experiments.experiment2 import main

pytestmark = pytest.mark.root


def test_quick_profile_loads_every_page_completely_and_robe_sim_is_faster(tmp_path):
    out = tmp_path / "quick"
    assert main(["--profile", "quick", "-j", "2", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 2 * 2 * 3
    for row in rows:
        assert row["status"] == "ok", row
        assert row["objects_fetched"] == row["objects_served"] == row["objects_expected"], row
        assert row["replay_misses"] == "0"
        # Every wget connection went through the proxy to the HAAP, on the expected first path.
        assert int(row["connections"]) >= 2
        assert row["winner_paths"] == (
            f"1:{row['connections']}" if row["strategy"] == "mptcp" else f"2:{row['connections']}"
        )
    for site in ("google.com", "baidu.com"):
        mean = {
            s: sum(float(r["load_ms"]) for r in rows if r["site"] == site and r["strategy"] == s) / 3
            for s in ("mptcp", "robe-sim")
        }
        assert mean["robe-sim"] < mean["mptcp"], (site, mean)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["complete"] and metadata["network"]["topology"] == "fig7"
    google = next(r for r in rows if r["site"] == "google.com")
    assert metadata["sites"]["google.com"]["objects"] == int(google["objects_expected"])
    # Resuming a complete sweep runs nothing.
    assert main(["--profile", "quick", "-j", "1", "--out", str(out)]) == 0
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 12


def test_direct_clients_timelines_captures_and_the_kernel_schedulers_stickiness(tmp_path):
    """wget without proxies (plain and mptcpize'd), connections.csv, --pcap, the local DNS cache, and
    what the captures say: kernel MPTCP (and the userspace twin with the kernel's rule) keep every
    request on the initial LTE subflow after DSL joined."""
    from analysis.packets import folder_report

    profile = tmp_path / "fidelity.toml"
    profile.write_text(
        'name = "fidelity"\ncorpus = "har"\nsites = ["baidu.com"]\n'
        'strategies = ["direct", "direct-mptcp", "mptcp", "mptcp-user+kernel-default"]\n'
        'repetitions = 1\nseed = 3\nload_timeout_s = 60\ndns = "local-cache"\n'
        "[lte]\nrtt_ms = 40\nrate_mbit = 10\n[dsl]\nrtt_ms = 20\nrate_mbit = 10\n"
    )
    out = tmp_path / "out"
    assert main(["--profile", str(profile), "-j", "1", "--out", str(out), "--pcap", "1"]) == 0
    rows = {r["strategy"]: r for r in csv.DictReader((out / "runs.csv").open())}
    assert all(r["status"] == "ok" and r["replay_misses"] == "0" for r in rows.values()), rows
    conns = list(csv.DictReader((out / "connections.csv").open()))
    for strategy, row in rows.items():
        mine = [c for c in conns if c["run_id"] == row["run_id"]]
        assert len(mine) == int(row["connections"]) and all(c["host"] for c in mine), (strategy, mine)
        assert all(float(c["dns_ms"]) < 5 for c in mine if c["dns_ms"]), mine  # answered by the local cache
        assert len(row["pcap"].split(";")) == 2 and all((out / "pcap" / n).exists() for n in row["pcap"].split(";"))
    for strategy in ("direct-mptcp", "mptcp"):  # the kernel joined DSL to every connection
        assert all(c["join_path"] == "1" for c in conns if c["strategy"] == strategy), strategy
    report = folder_report(out).groupby("strategy").sum(numeric_only=True).to_dict("index")
    for strategy in ("direct-mptcp", "mptcp", "mptcp-user+kernel-default"):
        counts = report[strategy]
        assert counts["requests_initial_after"] > 0 and counts["requests_joined_after"] == 0, report


def test_robe_lab_experiment2_draws_its_figure_and_hands_the_folder_to_the_sudo_user(tmp_path):
    """``make experiment2`` is ``robe-lab experiment2``: the run, then Figure 9 and the report of its
    folder; through sudo (SUDO_UID/SUDO_GID, as sudo sets them) every file is the user's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from robe_lab.paths import project_root

    out = tmp_path / "quick"
    user = {"SUDO_UID": "65534", "SUDO_GID": "65534", "SUDO_USER": "nobody"}
    argv = [str(Path(sys.executable).parent / "robe-lab"), "experiment2", "--profile", "quick", "-j", "2",
            "--limit", "4", "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, cwd=project_root(),
                          env={**os.environ, **user})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "drawing the figure and report" in done.stdout
    for name in ("figure9.png", "figure9.pdf", "report.md", "summary.csv", "runs.csv", "metadata.json"):
        assert (out / name).is_file(), name
    foreign = [str(p) for p in (out, *out.rglob("*")) if p.lstat().st_uid != 65534]
    assert not foreign
