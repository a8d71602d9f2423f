"""The time-varying analysis of experiment 2 (analysis.outage2) on a made-up folder: phases, the
paths the loads used, the acceptance checks, figure and report."""

import json
import threading
from pathlib import Path

from analysis import outage2
from analysis.schema import EXPERIMENT2
from experiments.profile2 import load_profile2
from experiments.sweep import append_row


def _load(strategy: str, start: float, ips_settles_after: int, timer_fails: bool) -> tuple[str, float, str]:
    """(status, load ms, winner_paths) of a made-up load of the outage profile."""
    lte_down, dsl_down = 10 <= start < 30, 40 <= start < 100
    if strategy == "mptcp":
        if lte_down:
            return ("failed", 0.0, "") if start < 25 else ("ok", (30 - start) * 1000 + 1500, "1:3")
        return "ok", 1500.0, "1:3"
    if strategy == "robe-ips":
        if dsl_down:
            k = int((start - 40) // 3)
            return ("failed", 0.0, "") if k < ips_settles_after else ("ok", 1400.0, "1:3")
        if 100 <= start < 106:
            return "ok", 1400.0, "1:3"  # DSL still suspect: back at 108 s, 8 s after the recovery
        return "ok", 1000.0, "2:3"
    failed = timer_fails and start == 60
    return ("failed", 0.0, "") if failed else ("ok", 1100.0, "1:3" if dsl_down else "2:3")


def _folder(tmp_path: Path, ips_settles_after: int = 1, timer_fails: bool = False) -> Path:
    profile = load_profile2("outage")
    lock = threading.Lock()
    for strategy in ("mptcp", "robe-ips", "robe-ips-timer"):
        for k in range(45):
            start = 3.0 * k
            status, load_ms, winners = _load(strategy, start, ips_settles_after, timer_fails)
            row = {**dict.fromkeys(EXPERIMENT2.names, ""), "run_id": f"{strategy}-r00-t{k:03d}-twitter.com",
                   "site": "twitter.com", "strategy": strategy, "repetition": 0, "seed": 1, "worker": 0,
                   "status": status, "load_ms": load_ms if status == "ok" else "", "connections": 3,
                   "winner_paths": winners, "attempts": 3, "resets_sent": 0, "losers_accepted": 0,
                   "wire_syns_sent": 6, "load_start_s": start + 0.01, "due_s": start}  # fmt: skip
            append_row(tmp_path / "runs.csv", row, lock, EXPERIMENT2)
    metadata = {"kind": "experiment2", "timeline": True, "profile": profile.to_dict(), "git": {"commit": "abc"},
                "passes": {"mptcp-r00": {"skipped": 4}}}  # fmt: skip
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    return tmp_path


def test_paths_used_and_phases():
    assert outage2.paths_used("1:2;2:3") == {1: 2, 2: 3}
    assert outage2.paths_used("") == {} and outage2.paths_used(None) == {}
    timeline = outage2.timeline_of(load_profile2("outage").to_dict())
    labels = [label for _, _, label in outage2.phases(timeline)]
    assert labels == ["0-10 s: both up", "10-30 s: LTE down", "30-40 s: both up", "40-100 s: DSL down",
                      "100-135 s: both up"]  # fmt: skip


def test_report_passes_when_the_strategies_behave(tmp_path):
    folder = _folder(tmp_path)
    files = outage2.render(folder)
    assert {f.name for f in files} >= {"outage.png", "outage.pdf", "report.md"}
    report = (folder / "report.md").read_text()
    assert "FAIL" not in report, report
    assert report.count("PASS") == 4  # mptcp, robe-ips settles, robe-ips comes back, robe-ips-timer
    assert "back on DSL" in report and "[8.0]" in report
    assert "4 due times" in report and "## Cost of robustness" in report
    table = outage2.phase_table(outage2.read_runs(folder), outage2.timeline_of(load_profile2("outage").to_dict()))
    ips = table.loc["robe-ips"].set_index("phase")
    assert ips.loc["40-100 s: DSL down", "failed"] == 1 and ips.loc["0-10 s: both up", "conns_on_DSL"] == 12


def test_report_fails_a_slow_settler_and_a_failing_timer(tmp_path):
    folder = _folder(tmp_path, ips_settles_after=5, timer_fails=True)
    outage2.write_report(folder)
    report = (folder / "report.md").read_text()
    assert "FAIL: robe-ips: every load after at most 3" in report and "[5]" in report
    assert "FAIL: robe-ips-timer never fails" in report


def test_a_strategy_whose_last_load_in_the_outage_failed_never_settled(tmp_path):
    folder = _folder(tmp_path, ips_settles_after=20)  # every load in the DSL outage fails
    rows, checks = outage2.acceptance(outage2.read_runs(folder), outage2.timeline_of(load_profile2("outage").to_dict()))
    ips = next(r for r in rows if r["strategy"] == "robe-ips" and r["outage"].startswith("DSL"))
    assert ips["loads_before_settled"] is None and ips["failed_in_outage"] == 20
    assert not next(ok for what, ok, _ in checks if what.startswith("robe-ips: every load"))
