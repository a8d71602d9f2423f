"""Experiment 2 with paths that change over time, end to end (root): a tiny schedule on real Figure 7
networks, proxies, HAAP, replay and wget; the default path (LTE) goes down for a few seconds."""

import csv
import json

import pytest

from analysis import outage2
from experiments.experiment2 import main

pytestmark = pytest.mark.root

PROFILE = """
name = "tiny-outage"
corpus = "har"
sites = ["twitter.com"]
strategies = ["mptcp", "robe-ips-timer"]
repetitions = 1
seed = 3
load_timeout_s = 30
dns = "local-cache"
duration_s = 12
interval_s = 2.0
[lte]
rtt_ms = 40
rate_mbit = 10
[dsl]
rtt_ms = 20
rate_mbit = 10
[[schedule]]
at_s = 4
path = 1
loss_pct = 100
[[schedule]]
at_s = 9
path = 1
loss_pct = 0
"""


def test_a_tiny_outage_of_the_default_path(tmp_path):
    profile = tmp_path / "tiny.toml"
    profile.write_text(PROFILE)
    out = tmp_path / "out"
    assert main(["--profile", str(profile), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    mptcp = [r for r in rows if r["strategy"] == "mptcp"]
    timer = [r for r in rows if r["strategy"] == "robe-ips-timer"]
    # Loads every 2 s (one tick per load): RobE_IPS+TIMER never stalls, so it runs every one of them.
    assert [float(r["due_s"]) for r in timer] == [0, 2, 4, 6, 8, 10]
    assert all(r["status"] == "ok" and abs(float(r["load_start_s"]) - float(r["due_s"])) < 0.5 for r in timer), timer
    # Its first connection went over LTE (no history); the join showed DSL's lower RTT: DSL from then on.
    assert all(r["winner_paths"].startswith("2:") for r in timer if float(r["due_s"]) >= 2), timer
    during = [r for r in timer if r["path1_loss_at_start"] == "100"]
    assert len(during) == 3 and all(r["winner_paths"] == f"2:{r['connections']}" for r in during)
    # Kernel MPTCP's load started in the outage waits for a SYN retransmission after the recovery
    # (SYNs at 4, 5, 7, 11 s): it takes over 5 s, and the due times it ran past are skipped.
    stalled = next(r for r in mptcp if r["due_s"] == "4.0000")
    assert stalled["path1_loss_at_start"] == "100" and float(stalled["load_ms"]) > 5000, stalled
    assert [r["due_s"] for r in mptcp if 4 < float(r["due_s"]) < 10] == []
    # The wire counts: one SYN and one MP_JOIN per connection with nothing lost; more in the outage.
    calm = [r for r in mptcp if r["path1_loss_at_start"] == "0" and float(r["due_s"]) < 4]
    assert all(int(r["wire_syns_sent"]) == 2 * int(r["connections"]) for r in calm), calm
    assert int(stalled["wire_syns_sent"]) > 2 * int(stalled["connections"])
    assert all(r["losers_accepted"] != "" for r in rows)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["complete"] and set(metadata["passes"]) == {"mptcp-r00", "robe-ips-timer-r00"}
    assert metadata["passes"]["mptcp-r00"]["skipped"] >= 2
    assert all(late < 0.1 for late in metadata["passes"]["mptcp-r00"]["late_changes_s"])
    files = outage2.render(out)
    assert (out / "outage.png").stat().st_size > 0 and "robe-ips-timer never fails" in files[-1].read_text()
    # Resuming a complete run does nothing.
    assert main(["--profile", str(profile), "--out", str(out)]) == 0
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == len(rows)
