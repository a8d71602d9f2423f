"""DaskSweep on a real embedded Dask cluster with stand-in networks (no namespaces): one row per
item, written by the driver; a worker killed mid-sweep loses nothing and doubles nothing."""

import contextlib
import csv
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from analysis.schema import STATUSES, Column, Schema
from experiments.cluster import ClusterSpec, DaskSweep, connect

#: The stand-in sweep's rows, written through a schema as every runner's are.
STAND_IN = Schema("stand-in", (
    Column("run_id", "text", "item"),
    Column("status", "text", "outcome", choices=STATUSES),
    Column("pid", "int", "process that built the network", empty=True),
    Column("network", "int", "index of the network in its process", empty=True),
    Column("engine_worker", "text", "Dask worker address", empty=True),
    Column("retries", "int", "scheduler's count of the item's lost workers"),
    Column("invocation", "text", "row stamp"),
))  # fmt: skip


class StandIn:
    """A 'network': records the process that built it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid = os.getpid()


def build(index: int, stack: contextlib.ExitStack) -> StandIn:
    return StandIn(index)


def run(network: StandIn, item: str) -> dict[str, object]:
    time.sleep(0.3)
    return {"run_id": item, "status": "ok", "pid": network.pid, "network": network.index}


def error_row(item: str, err: BaseException) -> dict[str, object]:
    return {"run_id": item, "status": "error", "pid": None, "network": None, "engine_worker": None}


def interrupt(network: StandIn) -> None:
    pass


def _sweep(client, runs_csv: Path) -> DaskSweep[StandIn, str]:
    return DaskSweep(client, kind="stand-in", build=build, run=run, error_row=error_row, interrupt=interrupt,
                     runs_csv=runs_csv, schema=STAND_IN, desc="test", item_id=str,
                     row_stamp={"invocation": "t"})  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _worker_pids(client) -> list[int]:
    return list(client.run(os.getpid).values())


def test_rows_written_once_by_the_driver_and_networks_reused(tmp_path):
    items = [f"run{i:02d}" for i in range(16)]
    with connect(ClusterSpec(local_workers=2), 2) as client:
        sweep = _sweep(client, tmp_path / "runs.csv")
        result = sweep.execute(items)
        closed = sweep.close_networks()
    assert result.counts["ok"] == 16 and not result.interrupted
    rows = _rows(tmp_path / "runs.csv")
    assert sorted(r["run_id"] for r in rows) == items and len(STAND_IN.read(tmp_path / "runs.csv")) == 16
    # Two processes of two threads: at most 4 networks, each built once and reused.
    assert len({(r["pid"], r["network"]) for r in rows}) <= 4 and sum(closed.values()) <= 4
    assert len({r["engine_worker"] for r in rows}) == 2
    assert {r["retries"] for r in rows} == {"0"} and sweep.retried() == {}


def test_a_killed_worker_loses_no_row_and_doubles_none(tmp_path):
    items = [f"run{i:02d}" for i in range(24)]
    runs_csv = tmp_path / "runs.csv"
    with connect(ClusterSpec(local_workers=2), 2) as client:
        victim = _worker_pids(client)[0]
        sweep = _sweep(client, runs_csv)

        def kill_soon() -> None:
            while not runs_csv.exists():
                time.sleep(0.05)
            time.sleep(0.1)  # the victim is in the middle of its next attempts
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        result = sweep.execute(items)
        killer.join()
    assert result.counts["ok"] == 24
    rows = _rows(runs_csv)
    assert Counter(r["run_id"] for r in rows) == Counter(items)
    retried = {r["run_id"] for r in rows if r["retries"] != "0"}
    assert retried and retried == set(sweep.retried())
    assert all(sweep.retried()[run_id]["retries"] >= 1 for run_id in retried)
    assert all(r["pid"] != str(victim) for r in rows if r["run_id"] in retried)
