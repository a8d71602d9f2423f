"""Experiment 2 with headless Chromium end to end (root): real Figure 7 network, proxies, replay, DNS stub.

Four loads, kernel MPTCP and RobE_SIM each: google.com over HTTPS (the run's CA trusted through the
NSS database, web fonts through ``@font-face``) and youtube.com (an http recording that Chromium's
HSTS preload list upgrades to https). Each must be ok by the browser's rules: load event, every page
object fetched whole and served, no page miss, no failed request, only the page's names looked up;
the favicon is counted as the browser's own request, and a compressed HAR is kept.
"""

import csv
import gzip
import json

import pytest

from experiments.experiment2 import main

pytestmark = pytest.mark.root

PROFILE = """name = "browser-one"
corpus = "har"
client = "chromium"
har_loads = 1
sites = ["google.com", "youtube.com"]
strategies = ["mptcp", "robe-sim"]
repetitions = 1
seed = 12
load_timeout_s = 60
[lte]
rtt_ms = 40
rate_mbit = 10
[dsl]
rtt_ms = 20
rate_mbit = 10
"""


def test_one_browser_load_per_site_is_complete_verified_and_recorded(tmp_path):
    profile = tmp_path / "browser-one.toml"
    profile.write_text(PROFILE)
    out = tmp_path / "out"
    assert main(["--profile", str(profile), "--out", str(out)]) == 0
    rows = {(r["site"], r["strategy"]): r for r in csv.DictReader((out / "runs.csv").open())}
    assert len(rows) == 4
    for (_site, strategy), row in rows.items():
        assert row["status"] == "ok", row
        assert row["client"] == "chromium" and row["error"] == ""
        assert float(row["nav_load_ms"]) > 0 and float(row["load_ms"]) > 0
        assert row["objects_fetched"] == row["objects_served"] == row["objects_expected"], row
        assert row["replay_misses"] == "0" and row["failed_requests"] == "0" and row["dns_extra_names"] == ""
        assert int(row["own_requests"]) >= 1  # the favicon: answered 404, not a page miss
        assert int(row["browser_requests"]) >= int(row["objects_expected"])
        wins = dict(part.split(":") for part in row["winner_paths"].split(";"))
        if strategy == "mptcp":  # every connection's first subflow on the default path (LTE)
            assert wins == {"1": row["connections"]}, row
        else:  # RobE_SIM races both paths: DSL wins nearly all (LTE may win a few of 20 parallel set-ups)
            assert int(wins.get("2", 0)) >= 0.8 * int(row["connections"]), row
        har = json.loads(gzip.decompress((out / "har" / row["har"]).read_bytes()))
        assert len(har["log"]["entries"]) >= int(row["objects_expected"])
    assert all(int(r["hsts_upgrades"]) > 0 for (site, _), r in rows.items() if site == "youtube.com")
    assert all(r["hsts_upgrades"] == "0" for (site, _), r in rows.items() if site == "google.com")
    metadata = json.loads((out / "metadata.json").read_text())
    tools = metadata["invocations"][-1]["tools"]
    assert tools["chromium"].startswith("Chromium ") and tools["playwright"] != "missing"
    assert metadata["invocations"][-1]["arguments"]["jobs"] == 1  # a browser's default: one network
