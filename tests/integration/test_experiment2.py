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
