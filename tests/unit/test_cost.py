"""analysis.cost: the cost-of-robustness table from rows as the runners write them."""

import threading
from pathlib import Path

import pandas as pd
import pytest

from analysis import cost
from analysis.schema import EXPERIMENT1, EXPERIMENT2, read_runs
from experiments.sweep import append_row


def _exp1(tmp_path: Path) -> pd.DataFrame:
    tmp_path.mkdir(exist_ok=True)
    lock = threading.Lock()
    for k, (strategy, attempts, syns, rsts) in enumerate([("mptcp", 1, 2, 0), ("mptcp", 1, 4, 0),
                                                          ("robe-sim", 2, 3, 1), ("robe-sim", 2, 3, 1)]):  # fmt: skip
        row = {**dict.fromkeys(EXPERIMENT1.names, ""), "run_id": f"{strategy}-L0-r{k:02d}", "strategy": strategy,
               "loss_pct": 0, "repetition": k, "seed": 1, "worker": 0, "status": "ok", "setup_ms": 30,
               "accept_ms": 30, "attempts": attempts, "resets_sent": rsts, "losers_accepted": rsts,
               "subflows_end": 2, "wire_syns_sent": syns, "wire_synacks_received": 2, "wire_rsts_sent": rsts,
               "wire_rsts_received": 0, "wire_packets": 12, "wire_bytes": 900 + 60 * rsts}  # fmt: skip
        append_row(tmp_path / "runs.csv", row, lock, EXPERIMENT1)
    return read_runs(tmp_path, EXPERIMENT1)


def test_experiment1_means_per_connection_and_loss(tmp_path):
    table = cost.per_connection(_exp1(tmp_path), ["strategy", "loss_pct"])
    assert list(table.index.get_level_values(0)) == ["mptcp", "robe-sim"]
    assert table.loc[("mptcp", 0.0), "wire_syns_sent"] == 3.0 and table.loc[("robe-sim", 0.0), "attempts"] == 2.0
    text = "\n".join(cost.report_lines(_exp1(tmp_path / "again"), ["strategy", "loss_pct"]))
    assert text.startswith("## Cost of robustness") and "SYNs sent" in text and "| robe-sim" in text


def test_experiment2_divides_by_connections_and_compares_bytes_with_mptcp(tmp_path):
    lock = threading.Lock()
    for site, scale in (("a.com", 1), ("b.com", 2)):
        for strategy, syns, size in (("mptcp", 12, 1000), ("robe-sim", 24, 1100)):
            row = {**dict.fromkeys(EXPERIMENT2.names, ""), "run_id": f"{site}-{strategy}-r00", "site": site,
                   "strategy": strategy, "repetition": 0, "seed": 1, "worker": 0, "status": "ok", "load_ms": 900,
                   "connections": 6 * scale, "attempts": syns // 2 * scale, "wire_syns_sent": syns * scale,
                   "wire_bytes": size * scale}  # fmt: skip
            append_row(tmp_path / "runs.csv", row, lock, EXPERIMENT2)
    runs = read_runs(tmp_path, EXPERIMENT2)
    table = cost.per_connection(runs, ["strategy"])
    assert table.loc["mptcp", "wire_syns_sent"] == 2.0 and table.loc["robe-sim", "wire_syns_sent"] == 4.0
    assert table.loc["robe-sim", "n"] == 18
    assert cost.extra_bytes_pct(runs)["robe-sim"] == pytest.approx(10.0)
    assert "+10.0 %" in "\n".join(cost.report_lines(runs, ["strategy"]))


def test_folders_without_counts_have_no_table(tmp_path):
    runs = _exp1(tmp_path)
    runs[list(cost.COLUMNS)] = pd.NA
    assert cost.report_lines(runs, ["strategy"]) == []
