"""Experiment 1's pure pieces: commands, row building, resume bookkeeping, early errors."""

import json
import os
import threading

import pytest

from analysis.schema import EXPERIMENT1
from experiments.experiment1 import (
    ROW_FIELDS,
    Options,
    build_row,
    check_before_building,
    connect_request,
    failure,
    kernel_give_up_s,
    parse_args,
    run_sweep,
)
from experiments.lifecycle import ExperimentError
from experiments.profile import RunSpec, load_profile
from experiments.sweep import append_row, finished_run_ids
from robe.client import ConnectionRecord, ConnectRequest
from robe.serverlog import read_record
from robe_lab.records import RecordError


def _client(**extra):
    """The agent's answer as it crosses the pipe (JSON: the paths' keys are strings), read back."""
    record = {
        "conn_id": "c1", "strategy": "robe-sim", "server": "198.18.3.1:5001", "status": "ok", "error": "",
        "connect_ns": 1_000_000_000, "winner": 1,
        "established_ns": 1_020_000_000, "reply_ns": 1_041_000_000, "fallback_tcp": False,
        "sources": ["198.18.1.1", "198.18.2.1"], "local_ports": {"0": 40000, "1": 40001},
        "syn_retransmits": {"0": 0, "1": 0},
        "subflows": [{"t_ns": 1_042_000_000, "local": "198.18.2.1:40001", "remote": "198.18.3.1:5001"},
                     {"t_ns": 1_062_000_000, "local": "198.18.1.1:50000", "remote": "198.18.3.1:5001"}],
    }  # fmt: skip
    record.update(extra)
    return ConnectionRecord.from_json(json.dumps(record))


def _server(mptcp=True):
    line = json.dumps({"event": "request", "conn": "c1", "peer": "198.18.2.1:40001", "first_bytes_ns": 1_030_500_000,
                       "accept_ns": 1_030_400_000, "request_done_ns": 1_030_600_000, "mptcp": mptcp})  # fmt: skip
    return read_record(line)


def test_records_are_checked_where_they_are_read():
    with pytest.raises(RecordError, match=r"winner='1': not a"):
        _client(winner="1")
    with pytest.raises(RecordError, match="unknown field"):
        _client(colour="blue")
    with pytest.raises(RecordError, match=r"event='hello': unknown"):
        read_record('{"event": "hello"}')
    with pytest.raises(RecordError, match="field 'conn' missing"):
        read_record('{"event": "request", "peer": "x"}')
    assert _client().local_ports == {0: 40000, 1: 40001}  # JSON's string keys back to path numbers


def test_row_joins_client_and_server_logs_on_one_clock():
    spec = RunSpec("robe-sim-L0-r00", "robe-sim", 0.0, 0, 42)
    row = build_row(spec, 3, "t", _client(), _server(), losers=1)
    # Where and how the attempt was measured (canary, time, host; retries on Dask) is left empty here:
    # the worker (and a cluster) fills it in.
    added = {"canary_ms", "canary_flagged", "attempt_s", "host", "kernel", "engine_worker", "retries"}
    assert set(row) == set(ROW_FIELDS) and all(row[column] == "" for column in added)
    assert row["setup_ms"] == "30.500" and row["accept_ms"] == "30.400" and row["established_ms"] == "20.000"
    assert row["winner_path"] == 2 and row["losers_accepted"] == 1 and row["fallback_tcp"] == 0
    # The winner's own subflow is not a joined one; the other path's is, at 62 ms.
    assert row["joined_subflows"] == 1 and row["subflow_ready_ms"] == "62.000"
    assert EXPERIMENT1.format_row(row)[EXPERIMENT1.names.index("accept_ms")] == "30.400"  # the schema takes it


def test_a_connection_the_server_never_saw_is_an_error_not_a_result():
    row = build_row(RunSpec("tcp-L0-r00", "tcp", 0.0, 0, 1), 0, "t", _client(), None, 0)
    assert row["status"] == "error" and row["setup_ms"] == ""
    broken = build_row(RunSpec("tcp-L0-r00", "tcp", 0.0, 0, 1), 0, "", failure("", "boom"), None, 0)
    for written in (row, broken):
        EXPERIMENT1.format_row(written)  # error rows are valid rows too


def test_failed_rows_have_no_times():
    client = _client(status="failed", winner=None, established_ns=None, reply_ns=None, error="path 0: timed out")
    row = build_row(RunSpec("tcp-L100-r00", "tcp", 100.0, 0, 1), 0, "t", client, None, 0)
    assert row["status"] == "failed" and row["setup_ms"] == "" and row["winner_path"] == ""
    EXPERIMENT1.format_row(row)


def _row(run_id, status):
    spec = RunSpec(run_id, "tcp", 50.0, 0, 1)
    client = _client() if status == "ok" else _client(status=status, winner=None, established_ns=None, reply_ns=None)
    return build_row(spec, 0, "t", client, _server(mptcp=False) if status == "ok" else None, 0)


def test_resume_skips_final_rows_and_reruns_errors_and_cut_rows(tmp_path):
    runs = tmp_path / "runs.csv"
    lock = threading.Lock()
    for run_id, status in [("a", "ok"), ("b", "failed"), ("c", "censored"), ("d", "error")]:
        append_row(runs, _row(run_id, status), lock, EXPERIMENT1)
    with runs.open("a") as handle:
        handle.write("e,x,tcp,50.0,0,1,0,ok")  # a row cut short (the runner was killed while writing)
    assert finished_run_ids(runs) == {"a", "b", "c"}
    assert finished_run_ids(tmp_path / "missing.csv") == set()


def test_connect_command_and_kernel_limits():
    profile = load_profile("quick")
    request = connect_request(profile, RunSpec("tcp-L0-r00", "tcp", 0.0, 0, 1), "cid", 5.0)
    assert request.strategy == "tcp" and request.timeout_s == 5.0 and request.conn_id == "cid"
    assert request.sources == ["198.18.1.1", "198.18.2.1"] and request.timer_s == profile.timer_s
    assert ConnectRequest.from_json(request.to_json()) == request  # what the agent reads is what was written
    assert kernel_give_up_s(6) == 127 and kernel_give_up_s(2) == 7


def test_bad_command_lines_fail_before_any_network(capsys):
    for argv, message in [
        (["--profile", "nosuch"], "no such profile"),
        (["--profile", "quick", "-j", "0"], "--jobs=0"),
        (["--profile", "quick", "--timeout", "-3"], "--timeout=-3"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_non_root_is_told_to_use_sudo(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # what an ordinary user's process sees
    with pytest.raises(ExperimentError, match="needs root"):
        check_before_building(Options(load_profile("quick"), tmp_path, 1, None, None))


@pytest.mark.skipif(os.geteuid() != 0, reason="root ignores file permissions")
def test_unwritable_results_folder_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ExperimentError, match="not writable"):
        check_before_building(Options(load_profile("quick"), blocker / "sub", 1, None, None))


def test_results_of_another_profile_are_not_mixed(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    (tmp_path / "metadata.json").write_text('{"profile_fingerprint": "someone-else"}')
    with pytest.raises(ExperimentError, match="different profile"):
        run_sweep(Options(load_profile("quick"), tmp_path, 1, None, None))  # refused before building anything
