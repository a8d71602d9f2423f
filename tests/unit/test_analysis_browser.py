"""analysis/browser.py: RobE's improvement with its bootstrap CI, and the browser report next to wget's."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import browser
from analysis.schema import EXPERIMENT2

_counter = itertools.count()
NETWORK = {"lte": {"rtt_ms": 40}, "dsl": {"rtt_ms": 20}, "internet_rtt_ms": 10, "corpus": "har"}


def test_improvement_is_the_ratio_of_means_with_a_bootstrap_interval():
    rng = np.random.default_rng(1)
    classic, robe = pd.Series(rng.normal(1500, 100, 30)), pd.Series(rng.normal(1000, 80, 30))
    point, low, high = browser.improvement_ci(classic, robe)
    assert point == pytest.approx(100 * (classic.mean() / robe.mean() - 1))
    assert 40 < low < point < high < 60
    wide = browser.improvement_ci(classic[:5], robe[:5])
    assert wide[2] - wide[1] > high - low  # fewer loads, a wider interval
    assert browser.improvement_ci(classic, robe) == (point, low, high)  # seeded
    same = browser.improvement_ci(classic, classic)
    assert same[0] == 0 and same[1] < 0 < same[2]


def test_runs_on_other_networks_are_not_compared():
    assert browser.same_network(NETWORK, dict(NETWORK)) == []
    assert browser.same_network(NETWORK, {**NETWORK, "internet_rtt_ms": 0}) == ["internet_rtt_ms"]


def _folder(path: Path, client: str, rows: list[dict[str, object]]) -> Path:
    path.mkdir()
    profile = {"name": client, "client": client, "sites": ["a.com", "b.com"], "repetitions": 3, **NETWORK}
    (path / "metadata.json").write_text(json.dumps({"profile": profile, "git": {"commit": "abc"}}))
    with (path / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXPERIMENT2.names)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(site: str, strategy: str, ms: float, **extra: object) -> dict[str, object]:
    """A runs.csv row of every schema column (empty where the test does not care)."""
    count = next(_counter)
    return {**dict.fromkeys(EXPERIMENT2.names, ""), "run_id": f"{site}-{strategy}-r{count}", "site": site,
            "strategy": strategy, "repetition": count, "seed": 1, "worker": 0, "status": "ok", "load_ms": ms,
            "replay_misses": 0, "objects_expected": 5, "connections": 4, **extra}  # fmt: skip


def test_browser_report_counts_own_requests_apart_and_sets_the_pair_side_by_side(tmp_path: Path):
    wget = _folder(tmp_path / "wget", "wget", [
        _row(s, g, base * k) for s in ("a.com", "b.com") for g, base in (("mptcp", 1500), ("robe-sim", 1000))
        for k in (0.9, 1.0, 1.1)])  # fmt: skip
    extra = {"failed_requests": 0, "own_requests": 1, "script_requests": 0, "hsts_upgrades": 0,
             "browser_requests": 6, "cpu_idle_pct": 50.0, "har": "", "dns_extra_names": ""}  # fmt: skip
    rows = [_row(s, g, base * k, nav_load_ms=base * k + 30, **extra) for s in ("a.com", "b.com")
            for g, base in (("mptcp", 600), ("robe-sim", 500)) for k in (0.9, 1.0, 1.1)]  # fmt: skip
    rows[0] = {**rows[0], "status": "failed", "load_ms": "", "nav_load_ms": "", "replay_misses": 1}
    run = _folder(tmp_path / "chromium", "chromium", rows)
    assert browser.is_browser_run(run) and not browser.is_browser_run(wget)
    files = browser.write_report(run, wget)
    assert [f.name for f in files] == ["browser.md", "wget_vs_browser.png", "wget_vs_browser.pdf"]
    text = (run / "browser.md").read_text()
    assert "- loads ok: 11 of 12; page misses: 1;" in text
    assert "the browser's own requests (favicon, answered 404, not page misses): 12 in 12 loads" in text
    assert "| a.com | 5/6 | 5 | 6.0 | 4.0 | 1 | 0 | 6 | 0 | 0 | 50 % |" in text
    assert "| b.com | 1500 / 1000 | +50 % [" in text  # wget's improvement beside the browser's
    nav = browser.site_summary(browser.read_runs(run), "nav_load_ms", ["a.com", "b.com"])
    assert nav.loc["b.com", "mptcp_ms"] == pytest.approx(630) and nav.loc["a.com", "mptcp_n"] == 2
    other = _folder(tmp_path / "elsewhere", "wget", [_row("a.com", "mptcp", 1.0)])
    meta = json.loads((other / "metadata.json").read_text())
    meta["profile"]["internet_rtt_ms"] = 0
    (other / "metadata.json").write_text(json.dumps(meta))
    assert browser.write_report(run, other) == [run / "browser.md"]
    assert "Not compared: the wget run" in (run / "browser.md").read_text()
