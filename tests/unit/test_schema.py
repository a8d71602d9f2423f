"""The results schema: strict reading (file:line:column in every error), writing through it, stored files."""

import csv
import threading
from pathlib import Path

import pytest

from analysis.schema import CONNECTIONS, EXPERIMENT1, EXPERIMENT2, SchemaError, read_connections, read_runs
from experiments.sweep import append_row

RESULTS = Path(__file__).resolve().parents[2] / "results"


def _row(**values):
    row: dict[str, object] = dict.fromkeys(EXPERIMENT1.names, "")
    row.update(run_id="tcp-L0-r00", conn_id="tcp-L0-r00-ab", strategy="tcp", loss_pct="0", repetition=0, seed=7,
               worker=0, status="ok", setup_ms="30.500", accept_ms="30.400", joined_subflows=0, losers_accepted=0,
               started_utc="2026-01-01T00:00:00+00:00")  # fmt: skip
    row.update(values)
    return row


def _write(path: Path, rows, header=None):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or EXPERIMENT1.names)
        for row in rows:
            writer.writerow(row if isinstance(row, list) else EXPERIMENT1.format_row(row))
    return path


def test_rows_written_through_the_schema_read_back_typed(tmp_path):
    lock = threading.Lock()
    runs = tmp_path / "runs.csv"
    append_row(runs, _row(), lock, EXPERIMENT1)
    append_row(runs, _row(run_id="robe-sim-L0-r00", strategy="robe-sim", winner_path=2, fallback_tcp=False,
                          subflow_ready_ms="61.0;82.5", server_subflow_ready_ms="70.1"), lock, EXPERIMENT1)  # fmt: skip
    append_row(runs, _row(run_id="tcp-L100-r00", status="failed", setup_ms="", accept_ms="", loss_pct="100"), lock,
               EXPERIMENT1)  # fmt: skip
    frame = EXPERIMENT1.read(runs)
    assert list(frame.columns) == EXPERIMENT1.names and len(frame) == 3
    assert frame["setup_ms"].dtype == "float64" and frame["repetition"].dtype == "Int64"
    assert frame["fallback_tcp"].dtype == "boolean" and not frame.loc[1, "fallback_tcp"]
    assert frame["fallback_tcp"].isna().iloc[0]
    assert frame.loc[1, "subflow_ready_ms"] == (61.0, 82.5) and frame.loc[0, "subflow_ready_ms"] == ()
    assert frame.loc[1, "winner_path"] == 2 and frame["winner_path"].isna().iloc[0]
    assert frame["setup_ms"].isna().iloc[2] and frame.loc[2, "status"] == "failed"


def test_truncated_row_is_an_error_naming_file_and_line(tmp_path):
    runs = _write(tmp_path / "runs.csv", [_row(), EXPERIMENT1.format_row(_row(run_id="b"))[:9]])
    header = len(EXPERIMENT1.names)
    with pytest.raises(SchemaError, match=rf"{runs}:3: 9 fields, the header has {header} \(a truncated row\)"):
        EXPERIMENT1.read(runs)


def test_row_with_extra_fields_is_an_error_naming_file_and_line(tmp_path):
    fields = EXPERIMENT1.format_row(_row(run_id="b"))
    runs = _write(tmp_path / "runs.csv", [_row(), _row(run_id="c"), [*fields, *fields[:5]]])
    expected = rf"{runs}:4: {len(fields) + 5} fields, the header has {len(fields)} \(extra fields\)"
    with pytest.raises(SchemaError, match=expected):
        EXPERIMENT1.read(runs)


def test_unparsable_value_names_file_line_and_column(tmp_path):
    fields = EXPERIMENT1.format_row(_row())
    fields[EXPERIMENT1.names.index("setup_ms")] = "30.5ms"
    runs = _write(tmp_path / "runs.csv", [_row(), fields])
    with pytest.raises(SchemaError, match=rf"{runs}:3: column 9 \(setup_ms\): '30.5ms' is not a number"):
        EXPERIMENT1.read(runs)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("status", "done", "is not one of ok, failed, censored, error"),
        ("repetition", "1.5", "is not an integer"),
        ("fallback_tcp", "yes", "is not 0 or 1"),
        ("seed", "", "empty, but the column needs a value"),
        ("setup_ms", "", "empty in an ok row"),
        ("setup_ms", "nan", "is not a finite number"),
        ("subflow_ready_ms", "1.0;x", "is not a number"),
    ],
)
def test_every_kind_of_bad_value_is_refused_on_read_and_on_write(tmp_path, column, value, problem):
    fields = EXPERIMENT1.format_row(_row())
    fields[EXPERIMENT1.names.index(column)] = value
    runs = _write(tmp_path / "runs.csv", [fields])
    with pytest.raises(SchemaError, match=rf":2: column \d+ \({column}\): .*{problem}"):
        EXPERIMENT1.read(runs)
    with pytest.raises(SchemaError, match=rf"column {column}: .*{problem}"):
        EXPERIMENT1.format_row(_row(**{column: value}))


def test_header_problems_are_errors(tmp_path):
    names = EXPERIMENT1.names
    missing = _write(tmp_path / "missing.csv", [], header=[n for n in names if n != "accept_ms"])
    with pytest.raises(SchemaError, match=r"missing\.csv:1: .*missing column\(s\) accept_ms"):
        EXPERIMENT1.read(missing)
    unknown = _write(tmp_path / "unknown.csv", [], header=[*names, "colour"])
    with pytest.raises(SchemaError, match=r"unknown column\(s\) colour"):
        EXPERIMENT1.read(unknown)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SchemaError, match=r"empty\.csv:1: empty file"):
        EXPERIMENT1.read(tmp_path / "empty.csv")


def test_files_from_before_an_optional_column_read_with_its_default(tmp_path):
    old = [n for n in EXPERIMENT1.names if n != "server_subflow_ready_ms"]
    row = EXPERIMENT1.format_row(_row())[: len(old)]
    frame = EXPERIMENT1.read(_write(tmp_path / "runs.csv", [row], header=old))
    assert frame.loc[0, "server_subflow_ready_ms"] == () and list(frame.columns) == EXPERIMENT1.names


def test_line_numbers_count_quoted_newlines(tmp_path):
    bad = EXPERIMENT1.format_row(_row(run_id="x"))
    bad[EXPERIMENT1.names.index("repetition")] = "one"
    runs = _write(tmp_path / "runs.csv", [_row(error="first\nsecond", status="failed", setup_ms="", accept_ms=""), bad])
    with pytest.raises(SchemaError, match=r":4: column 5 \(repetition\)"):
        EXPERIMENT1.read(runs)


def test_appending_to_a_file_of_another_schema_is_refused_before_any_run(tmp_path):
    from experiments.sweep import Sweep

    runs = _write(tmp_path / "runs.csv", [], header=EXPERIMENT1.names[:-1])
    sweep: Sweep[int, str] = Sweep([0], run=lambda w, s: _row(), error_row=lambda w, s, e: _row(), runs_csv=runs,
                                   schema=EXPERIMENT1, desc="t")  # fmt: skip
    with pytest.raises(SchemaError, match=r"header .* differs from the experiment1 schema"):
        sweep.execute(["a"])


def test_writing_refuses_rows_with_other_columns():
    with pytest.raises(SchemaError, match=r"missing columns \['error'\], unknown columns \['colour'\]"):
        EXPERIMENT1.format_row({**{k: v for k, v in _row().items() if k != "error"}, "colour": "red"})


def test_every_stored_runs_file_reads():
    folders = sorted(p.parent for p in RESULTS.glob("**/runs.csv"))
    assert len(folders) >= 7
    for folder in folders:
        frame = read_runs(folder)
        assert len(frame) > 0 and not frame["status"].isna().any(), folder
        schema = EXPERIMENT2 if "experiment2" in str(folder) else EXPERIMENT1
        assert list(frame.columns) == schema.names


def test_every_stored_connections_file_reads_and_matches_its_loads():
    folders = sorted(p.parent for p in RESULTS.glob("experiment2/*/connections.csv"))
    assert len(folders) >= 10
    for folder in folders:
        conns = read_connections(folder)
        assert list(conns.columns) == CONNECTIONS.names
        assert set(conns["run_id"]) <= set(read_runs(folder)["run_id"]), folder
        assert conns["conn"].min() == 1 and conns["accept_ms"].notna().all(), folder


def test_connections_rows_are_checked_like_runs_rows(tmp_path):
    from experiments.timeline import CONNECTION_FIELDS, connection_rows
    from webreplay.replay_state import ConnectionRecord as ReplayConnection

    assert CONNECTIONS.names == CONNECTION_FIELDS  # the runner writes the schema's columns
    rows = connection_rows(run_id="s-mptcp-r00", site="s", strategy="mptcp", repetition=0, t0_ns=0, proxy_events=[],
                           haap_events=[], replay_connections=[ReplayConnection(1, "198.18.1.1:4000", "198.19.0.1:443",
                                                                                True, 1_000_000, 9_000_000)],
                           dns_events=[], mptcp_events=[], host_of={"198.19.0.1": "a.example"})  # fmt: skip
    path = tmp_path / "connections.csv"
    for row in rows:
        append_row(path, row, threading.Lock(), CONNECTIONS)
    frame = CONNECTIONS.read(path)
    assert frame.loc[0, "host"] == "a.example" and frame.loc[0, "accept_ms"] == 1.0 and frame["error"].isna().all()
    with path.open("a") as handle:
        handle.write("s-mptcp-r00,s,mptcp,0,2,a.example\n")
    with pytest.raises(SchemaError, match=rf"{path}:3: 6 fields, the header has {len(CONNECTIONS.names)}"):
        CONNECTIONS.read(path)
    with pytest.raises(SchemaError, match="column 5 \\(conn\\): 'two' is not an integer"):
        CONNECTIONS.read(_write(tmp_path / "bad.csv", [["s-mptcp-r00", "s", "mptcp", "0", "two",
                                                        *[""] * (len(CONNECTIONS.names) - 5)]],
                                header=CONNECTIONS.names))  # fmt: skip


def test_files_from_before_issue_11_read_with_its_columns_empty(tmp_path):
    issue12 = EXPERIMENT2.names[EXPERIMENT2.names.index("client") :]  # the page-load client's columns
    old_header = [n for n in EXPERIMENT2.names
                  if n not in ("load_close_ms", "dns_ms", "dns_lookups", "pcap", "invocation", *issue12)]  # fmt: skip
    frame = EXPERIMENT2.read(RESULTS / "experiment2" / "mahimahi" / "runs.csv")
    assert frame["client"].eq("wget").all() and frame["nav_load_ms"].isna().all()  # written before issue 12
    assert frame["pcap"].isna().all() and frame["dns_lookups"].isna().all() and frame["load_ms"].notna().all()
    with (RESULTS / "experiment2" / "mahimahi" / "runs.csv").open() as handle:
        assert handle.readline().strip().split(",") == old_header
    zero = read_connections(RESULTS / "experiment2" / "zero")  # written before subflow_ports existed
    assert zero["subflow_ports"].isna().all() and zero["server_ms"].isna().all()


ISSUE16 = ["canary_ms", "canary_flagged", "attempt_s", "host", "kernel", "engine_worker", "retries"]


def test_files_from_before_issue_16_read_with_the_canary_columns_empty():
    after = EXPERIMENT1.names.index("invocation") + 1
    assert EXPERIMENT1.names[after : after + len(ISSUE16)] == ISSUE16  # declared after the invocation
    old = read_runs(RESULTS / "experiment1" / "paper")  # written before the timing canary
    assert old[ISSUE16].isna().all().all() and old["setup_ms"].notna().any()
    with (RESULTS / "experiment1" / "paper" / "runs.csv").open() as handle:
        assert not set(ISSUE16) & set(handle.readline().strip().split(","))
    new = read_runs(RESULTS / "experiment1" / "paper-fast")  # made with them
    assert new["canary_ms"].dtype == "float64" and new["canary_flagged"].dtype == "boolean"
    assert new["retries"].dtype == "Int64" and new["attempt_s"].notna().all() and new["host"].notna().all()
    assert int(new["canary_flagged"].sum()) == 3 and (new["retries"] == 0).all()


ISSUE14 = ["attempts", "resets_sent", "subflows_end", "attempt_start_s", "due_s", "path1_loss_at_start", "ips_mode",
           "path_order", "wire_syns_sent", "wire_synacks_received", "wire_rsts_sent", "wire_rsts_received",
           "wire_packets", "wire_bytes"]  # fmt: skip


def test_files_from_before_issue_14_read_with_the_cost_columns_empty():
    assert EXPERIMENT1.names[-len(ISSUE14) :] == ISSUE14  # declared last
    old = read_runs(RESULTS / "experiment1" / "paper")  # written before RobE_IPS and the cost columns
    assert old[ISSUE14].isna().all().all()
    new = read_runs(RESULTS / "experiment1" / "ips")  # made with them
    ok = new[new["status"] == "ok"]
    assert new["wire_bytes"].dtype == "Int64" and ok["wire_syns_sent"].notna().all() and (ok["attempts"] >= 1).all()
    assert set(new["ips_mode"].dropna()) <= {"default", "ips", "sim"}
    outage = read_runs(RESULTS / "experiment1" / "outage")  # a time-varying run: no wire counts
    assert outage["attempt_start_s"].notna().any() and outage["wire_bytes"].isna().all()
    exp2 = read_runs(RESULTS / "experiment2" / "ips")
    assert (exp2["wire_syns_sent"] >= exp2["connections"]).all() and exp2["attempts"].notna().all()


def test_a_lost_canary_burst_is_written_flagged_without_a_number(tmp_path):
    import math

    from experiments.canary import row_fields

    row = _row(**row_fields(math.inf), attempt_s="0.42", host="h", kernel="6.18", retries=0)
    frame = EXPERIMENT1.read(_write(tmp_path / "runs.csv", [row]))
    assert frame["canary_ms"].isna().iloc[0] and frame.loc[0, "canary_flagged"]
    with pytest.raises(SchemaError, match=r"column canary_ms: 'inf' is not a finite number"):
        EXPERIMENT1.format_row(_row(canary_ms="inf"))
