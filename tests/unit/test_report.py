"""Figure 8 summary and the report's acceptance checks on hand-made result folders."""

import csv
import json
import math

from analysis.figure8 import model_settings, render, summarise
from analysis.report import acceptance, agrees_with_model, write_report
from experiments.experiment1 import ROW_FIELDS

PROFILE = {"name": "t", "description": "test", "path1": {"rtt_ms": 20}, "path2": {"rtt_ms": 20},
           "timer_s": 1.0, "loss_direction": "up", "tcp_syn_retries": None}  # fmt: skip
META = {"profile": PROFILE, "network": {"sysctls": {"client": {"net.ipv4.tcp_syn_retries": "6",
                                                               "net.ipv4.tcp_syn_linear_timeouts": "0"}}}}  # fmt: skip


def _row(strategy, loss, status, setup="", winner="1"):
    row = dict.fromkeys(ROW_FIELDS, "")
    row.update(run_id=f"{strategy}-{loss}-{setup}", strategy=strategy, loss_pct=str(loss), status=status,
               setup_ms=setup, winner_path=winner if status == "ok" else "", losers_accepted="0")  # fmt: skip
    return row


ROWS = [
    *[_row(s, 0, "ok", t) for s in ("tcp", "mptcp", "robe-sim", "robe-timer") for t in ("30.6", "30.7", "30.9")],
    *[_row(s, 100, "failed") for s in ("tcp", "mptcp") for _ in range(3)],
    *[_row("robe-sim", 100, "ok", t, "2") for t in ("30.6", "30.8", "30.7")],
    *[_row("robe-timer", 100, "ok", t, "2") for t in ("1030.6", "1030.8", "1030.7")],
    _row("tcp", 0, "error"),  # a broken attempt: left out
]


def test_cells_and_the_model():
    points = {(p.strategy, p.loss_pct): p for p in summarise(ROWS, META)}
    tcp0 = points[("tcp", 0.0)]
    assert tcp0.runs == 3 and tcp0.ok == 3 and tcp0.median_ms == 30.7 and tcp0.model_mean_ms == 30.0
    assert points[("tcp", 100.0)].failed == 3 and points[("tcp", 100.0)].model_success == 0.0
    timer = points[("robe-timer", 100.0)]
    assert timer.model_mean_ms == 1030.0 and timer.path2_win_share == 1.0 and agrees_with_model(timer)


def test_acceptance_checks_pass_and_fail_on_the_figures():
    points = summarise(ROWS, META)
    results = {name: ok for name, ok, _ in acceptance(points, PROFILE)}
    assert all(results.values()), results
    slow = [r if not (r["strategy"] == "tcp" and r["loss_pct"] == "0") else {**r, "setup_ms": "32.5"} for r in ROWS]
    results = {name: ok for name, ok, _ in acceptance(summarise(slow, META), PROFILE)}
    assert not results["0 % loss, tcp: median within 1 ms of 1.5 x RTT"]


def test_model_is_omitted_where_it_does_not_apply():
    linear = {**META, "network": {"sysctls": {"client": {"net.ipv4.tcp_syn_linear_timeouts": "4"}}}}
    assert not model_settings(linear).applicable
    assert all(math.isnan(p.model_mean_ms) for p in summarise(ROWS, linear))
    both = {**META, "profile": {**PROFILE, "loss_direction": "both"}}
    assert "egress" in model_settings(both).reason


def test_render_writes_figure_summary_and_report(tmp_path):
    with (tmp_path / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows(ROWS)
    (tmp_path / "metadata.json").write_text(json.dumps(META))
    files = [*render(tmp_path), write_report(tmp_path)]
    assert all(f.stat().st_size > 0 for f in files)
    assert "PASS: 100 % loss, robe-sim: every run connects" in (tmp_path / "report.md").read_text()
