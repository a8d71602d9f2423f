"""The time-varying analysis (analysis.outage) on a made-up folder: figure, phases, acceptance."""

import json
import threading
from pathlib import Path

import pandas as pd

from analysis import cost, outage
from analysis.schema import EXPERIMENT1
from experiments.profile import load_profile
from experiments.sweep import append_row


def _folder(tmp_path: Path, ips_settles_after: int = 1, timer_fails: bool = False) -> Path:
    profile = load_profile("outage")
    rows = []
    for strategy in ("mptcp", "robe-ips", "robe-ips-timer"):
        for k in range(80):
            start = k + 0.1
            down = 20 <= start < 50
            ok, setup, winner = True, 30.5, 1
            if strategy == "mptcp" and down:
                ok = start + 7 >= 50
                setup = (50 - start) * 1000 + 30
            if strategy == "robe-ips" and down:
                settled = start >= 20 + ips_settles_after
                ok, setup, winner = settled, 60.6, 2
            if strategy == "robe-ips" and 50 <= start < 52:
                setup, winner = 60.6, 2  # back on path 1 two seconds after the recovery
            if strategy == "robe-ips-timer" and down:
                setup, winner = (60.6, 2) if start > 21 else (1060.0, 2)
                ok = not (timer_fails and k == 30)
            rows.append({**dict.fromkeys(EXPERIMENT1.names, ""), "run_id": f"{strategy}-r00-c{k:03d}",
                         "strategy": strategy, "loss_pct": 0, "repetition": 0, "seed": 1, "worker": 0,
                         "status": "ok" if ok else "failed", "setup_ms": setup if ok else "",
                         "accept_ms": setup if ok else "", "winner_path": winner if ok else "",
                         "attempt_start_s": start, "due_s": k, "attempts": 1, "resets_sent": 0,
                         "losers_accepted": 0, "subflows_end": 2})  # fmt: skip
    lock = threading.Lock()
    for row in rows:  # written as the runner writes them: through the schema
        append_row(tmp_path / "runs.csv", row, lock, EXPERIMENT1)
    metadata = {"kind": "experiment1", "timeline": True, "profile": profile.to_dict(), "git": {"commit": "abc"}}
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    return tmp_path


def test_outage_report_passes_when_the_strategies_behave(tmp_path):
    folder = _folder(tmp_path)
    files = outage.render(folder)
    assert {f.name for f in files} == {"outage.png", "outage.pdf", "report.md"}
    assert (folder / "outage.png").stat().st_size > 10_000
    report = (folder / "report.md").read_text()
    assert "FAIL" not in report, report
    assert report.count("PASS") == 4
    rows, _ = outage.acceptance(outage.read_runs(folder), load_profile("outage").to_dict())
    ips = next(r for r in rows if r["strategy"] == "robe-ips")
    assert ips["connections_before_settled"] == 1 and ips["back_on_path1_after_s"] == 2.1


def test_outage_report_fails_a_slow_ips_and_a_failing_timer(tmp_path):
    folder = _folder(tmp_path, ips_settles_after=6, timer_fails=True)
    outage.write_report(folder)
    report = (folder / "report.md").read_text()
    assert "FAIL: robe-ips: set-ups stay" in report
    assert "FAIL: robe-ips-timer never fails" in report


def test_phase_table_counts_per_phase(tmp_path):
    runs = outage.read_runs(_folder(tmp_path))
    table = outage.phase_table(runs, load_profile("outage").to_dict())
    mptcp = table.loc["mptcp"].set_index("phase")
    assert list(mptcp.attempts) == [20, 30, 30] and mptcp.loc["during", "failed"] == 23
    table = cost.per_connection(runs, ["strategy"])
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["mptcp", "robe-ips", "robe-ips-timer"]
    assert table.loc["mptcp", "subflows_end"] == 2.0 and table.loc["mptcp", "n"] == 80
