"""Experiment 1 cells, the report's acceptance checks and Figure 8 on hand-made result folders."""

import csv
import json
import math

import pandas as pd
import pytest

from analysis.experiment1_cells import model_settings, summarise
from analysis.figure8 import render
from analysis.report import acceptance, statistics_outside, write_report
from analysis.schema import EXPERIMENT1

PROFILE = {"name": "t", "description": "test", "path1": {"rtt_ms": 20}, "path2": {"rtt_ms": 20},
           "timer_s": 1.0, "loss_direction": "up", "tcp_syn_retries": None}  # fmt: skip
META = {"profile": PROFILE, "network": {"sysctls": {"client": {"net.ipv4.tcp_syn_retries": "6",
                                                               "net.ipv4.tcp_syn_linear_timeouts": "0"}}}}  # fmt: skip


def _row(strategy, loss, status, setup="", winner="1", accept=None):
    row = dict.fromkeys(EXPERIMENT1.names, "")
    ok = status == "ok"
    row.update(run_id=f"{strategy}-{loss}-{setup}", strategy=strategy, loss_pct=str(loss), status=status,
               repetition="0", seed="1", worker="0", setup_ms=setup,
               accept_ms=(accept if accept is not None else setup) if ok else "",
               winner_path=winner if ok else "", losers_accepted="0", joined_subflows="0")  # fmt: skip
    return row


ROWS = [
    *[_row(s, 0, "ok", t) for s in ("tcp", "mptcp", "robe-sim", "robe-timer") for t in ("30.6", "30.7", "30.9")],
    *[_row(s, 100, "failed") for s in ("tcp", "mptcp") for _ in range(3)],
    *[_row("robe-sim", 100, "ok", t, "2") for t in ("30.6", "30.8", "30.7")],
    *[_row("robe-timer", 100, "ok", t, "2") for t in ("1030.6", "1030.8", "1030.7")],
    _row("tcp", 0, "error"),  # a broken attempt: left out
]


def _frame(rows, tmp_path):
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EXPERIMENT1.names)
        writer.writerows(EXPERIMENT1.format_row(r) for r in rows)
    return EXPERIMENT1.read(path)


def _cell(cells, strategy, loss, metric="request"):
    mine = cells[(cells["strategy"] == strategy) & (cells["loss_pct"] == loss) & (cells["metric"] == metric)]
    assert len(mine) == 1
    return mine.iloc[0]


def test_cells_and_the_model(tmp_path):
    cells = summarise(_frame(ROWS, tmp_path), META)
    assert set(cells["metric"]) == {"accept", "request"} and len(cells) == 2 * 8
    tcp0 = _cell(cells, "tcp", 0.0)
    assert tcp0["runs"] == 3 and tcp0["ok"] == 3 and tcp0["median_ms"] == 30.7 and tcp0["model_mean_ms"] == 30.0
    assert _cell(cells, "tcp", 100.0)["failed"] == 3 and _cell(cells, "tcp", 100.0)["model_success"] == 0.0
    timer = _cell(cells, "robe-timer", 100.0, "accept")
    assert timer["model_mean_ms"] == pytest.approx(1030.0) and timer["path2_win_share"] == 1.0
    assert timer["mean_agrees"] and timer["median_agrees"]
    # No successful attempt where the model expects none: consistent.
    assert _cell(cells, "mptcp", 100.0)["mean_agrees"]


def test_without_preflight_figures_the_configured_rtts_are_used_and_with_them_the_measured():
    assert model_settings(META).rtt1_s == 0.02 and model_settings(META).rtt_source == "configured"
    preflight = {"worker0": {"path1": {"p50_ms": 20.3}, "path2": {"p50_ms": 20.4}}}
    measured = {**META, "invocations": [{"preflight": preflight}]}
    settings = model_settings(measured)
    assert settings.rtt1_s == pytest.approx(0.0203) and settings.rtt2_s == pytest.approx(0.0204)


def test_acceptance_checks_pass_and_fail_on_the_figures(tmp_path):
    cells = summarise(_frame(ROWS, tmp_path), META)
    results = {name: ok for name, ok, _ in acceptance(cells, META)}
    assert all(results.values()), results
    slow = [r if not (r["strategy"] == "tcp" and r["loss_pct"] == "0") else {**r, "setup_ms": "32.5"} for r in ROWS]
    results = {name: ok for name, ok, _ in acceptance(summarise(_frame(slow, tmp_path), META), META)}
    assert not results["0 % loss, tcp: median within 1 ms of 1.5 x RTT"]


def test_a_statistic_outside_the_model_is_counted(tmp_path):
    late = [r if r["strategy"] != "robe-timer" or r["loss_pct"] != "100" else {**r, "accept_ms": "1040.0"}
            for r in ROWS]  # fmt: skip
    cells = summarise(_frame(late, tmp_path), META)
    outside, judged, names = statistics_outside(cells)
    assert judged == 32 and outside == 2 and names == ["robe-timer@100% accept mean", "robe-timer@100% accept median"]


def test_model_is_omitted_where_it_does_not_apply(tmp_path):
    linear = {**META, "network": {"sysctls": {"client": {"net.ipv4.tcp_syn_linear_timeouts": "4"}}}}
    assert not model_settings(linear).applicable
    cells = summarise(_frame(ROWS, tmp_path), linear)
    assert cells["model_mean_ms"].isna().all() and cells["mean_agrees"].isna().all()
    both = {**META, "profile": {**PROFILE, "loss_direction": "both"}}
    assert "egress" in model_settings(both).reason


def test_render_writes_figures_summary_and_report(tmp_path):
    _frame(ROWS, tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps(META))
    files = [*render(tmp_path), write_report(tmp_path)]
    assert {f.name for f in files} == {"figure8.png", "figure8.pdf", "figure8-wide.png", "figure8-wide.pdf",
                                       "summary.csv", "report.md"}  # fmt: skip
    assert all(f.stat().st_size > 0 for f in files)
    text = (tmp_path / "report.md").read_text()
    assert "PASS: 100 % loss, robe-sim: every run connects" in text and "## connect() → accept()" in text
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 16 and not math.isnan(summary["mean_ms"].iloc[0])
    assert render(tmp_path, "request")[0].name == "figure8-request.png"
