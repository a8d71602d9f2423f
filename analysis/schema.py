"""The row schemas of stored results: what each column of a ``runs.csv`` holds, its type and meaning.

One schema per results file: ``runs.csv`` of each experiment (``EXPERIMENT1``, ``EXPERIMENT2``) and
experiment 2's ``connections.csv`` (``CONNECTIONS``). The runners write their rows with
``Schema.format_row`` (a value the reader would reject is refused when it is written) and analysis
reads every ``runs.csv`` with ``read_runs`` (``connections.csv`` with ``read_connections``) into a
pandas DataFrame with typed columns. The reader is strict: a row with the wrong number of fields,
a missing or unknown column, a value that does not parse or a value outside its choices is an
error naming the file, line and column; nothing becomes a silent NaN. Empty fields are read as
missing values (NA) only in the columns declared ``empty``, and a column declared
``needed_when_ok`` must not be empty in a row whose status is ``ok``.

Files written before a column existed still read: a column with a ``default`` may be absent from
a file's header, and its values are then the default (``_SINCE_ISSUE11`` marks the columns that
issue 11 added). To add a column: declare it once here (with a default, so stored results keep
reading) and let the runner fill it.

Types (``Column.kind``): ``text``; ``int`` (Int64, NA when empty); ``float`` (float64, NaN when
empty); ``flag`` (0/1, pandas ``boolean``); ``floats`` (``;``-separated floats, a tuple per row).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

KINDS = ("text", "int", "float", "flag", "floats")
STATUSES = ("ok", "failed", "censored", "error")
#: Statuses that are results (``error`` rows are broken attempts a resume runs again).
FINAL_STATUSES = ("ok", "failed", "censored")


class SchemaError(ValueError):
    """A file or row does not match its schema; the message names the file, line and column."""


@dataclass(frozen=True)
class Column:
    """One column of a results file.

    Attributes:
        name: header name.
        kind: one of ``KINDS``.
        meaning: what the value is (units included).
        empty: whether the field may be empty (a missing value).
        needed_when_ok: must not be empty when the row's ``status`` is ``ok``.
        choices: the allowed values (text columns), empty for any.
        default: the value of rows in files written before the column existed; None when every
            file must have the column.
    """

    name: str
    kind: str
    meaning: str
    empty: bool = False
    needed_when_ok: bool = False
    choices: tuple[str, ...] = ()
    default: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name}: kind={self.kind!r} not in {KINDS}")

    def check(self, value: str) -> str:
        """Empty string if ``value`` is valid for this column, else why not."""
        if value == "":
            return "" if self.empty else "empty, but the column needs a value"
        if self.choices and value not in self.choices:
            return f"{value!r} is not one of {', '.join(self.choices)}"
        try:
            if self.kind == "int":
                int(value)
            elif self.kind == "float":
                if not math.isfinite(float(value)):
                    return f"{value!r} is not a finite number"
            elif self.kind == "flag" and value not in ("0", "1"):
                return f"{value!r} is not 0 or 1"
            elif self.kind == "floats":
                for part in value.split(";"):
                    if not math.isfinite(float(part)):
                        return f"{value!r} holds a non-finite number"
        except ValueError:
            return f"{value!r} is not {'an integer' if self.kind == 'int' else 'a number'}"
        return ""


@dataclass(frozen=True)
class Schema:
    """The columns of one experiment's ``runs.csv``, in the order the runner writes them."""

    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        """Column names in writing order (the header)."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        """The column called ``name`` (KeyError if none)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"schema {self.name} has no column {name!r}")

    def format_row(self, row: Mapping[str, Any]) -> list[str]:
        """The fields of one row, in header order, validated (SchemaError naming the column).

        ``row`` must have exactly the schema's columns. None is written as an empty field, a
        bool as 0/1, a float in its shortest exact form.
        """
        missing = [n for n in self.names if n not in row]
        extra = [n for n in row if n not in self.names]
        if missing or extra:
            raise SchemaError(f"{self.name} row: missing columns {missing}, unknown columns {extra}")
        fields = []
        for column in self.columns:
            text = _format_value(row[column.name])
            problem = column.check(text)
            if not problem and column.needed_when_ok and text == "" and row.get("status") == "ok":
                problem = "empty in an ok row"
            if problem:
                raise SchemaError(f"{self.name} row {row.get('run_id', '?')}: column {column.name}: {problem}")
            fields.append(text)
        return fields

    def check_header(self, path: Path) -> None:
        """SchemaError unless ``path`` (an existing runs.csv) has exactly this schema's header, so that
        rows appended to it line up with its columns."""
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != self.names:
            raise SchemaError(
                f"{path}: header {header} differs from the {self.name} schema {self.names} (written by other "
                "code); finish it with that code or choose another results folder"
            )

    def read(self, path: Path) -> pd.DataFrame:
        """The rows of ``path`` as a typed DataFrame (SchemaError naming file:line:column on any problem)."""
        return _read(self, path)


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _read(schema: Schema, path: Path) -> pd.DataFrame:
    # The standard library's tokenizer, not pandas.read_csv: pandas pads a short row with NaN
    # silently and reports no line numbers; here every record keeps the line it starts on.
    try:
        handle = path.open(newline="")
    except OSError as err:
        raise SchemaError(f"{path}: cannot read: {err.strerror}") from None
    with handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise SchemaError(f"{path}:1: empty file, expected the {schema.name} header") from None
        except csv.Error as err:
            raise SchemaError(f"{path}:1: {err}") from None
        _check_header(schema, path, header)
        records: list[list[str]] = []
        lines: list[int] = []
        start = reader.line_num + 1
        try:
            for record in reader:
                if len(record) != len(header):
                    raise SchemaError(
                        f"{path}:{start}: {len(record)} fields, the header has {len(header)} "
                        f"({'a truncated row' if len(record) < len(header) else 'extra fields'})"
                    )
                records.append(record)
                lines.append(start)
                start = reader.line_num + 1
        except csv.Error as err:
            raise SchemaError(f"{path}:{start}: {err}") from None
    raw = pd.DataFrame(records, columns=header, dtype=object) if records else pd.DataFrame(columns=header, dtype=object)
    return _typed(schema, path, header, raw, lines)


def _check_header(schema: Schema, path: Path, header: Sequence[str]) -> None:
    unknown = [n for n in header if n not in schema.names]
    duplicated = sorted({n for n in header if header.count(n) > 1})
    missing = [c.name for c in schema.columns if c.name not in header and c.default is None]
    if unknown or duplicated or missing:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        if duplicated:
            problems.append(f"duplicated column(s) {', '.join(duplicated)}")
        raise SchemaError(f"{path}:1: header does not match the {schema.name} schema: {'; '.join(problems)}")


def _typed(schema: Schema, path: Path, header: Sequence[str], raw: pd.DataFrame, lines: list[int]) -> pd.DataFrame:
    ok = raw["status"] == "ok" if "status" in raw.columns else pd.Series(False, index=raw.index)
    columns: dict[str, pd.Series[Any]] = {}
    for column in schema.columns:
        if column.name in header:
            values = raw[column.name].astype(str)
            position = header.index(column.name) + 1
        else:  # a column added after this file was written
            assert column.default is not None
            values = pd.Series(column.default, index=raw.index, dtype=object)
            position = 0
        for index, (value, is_ok) in enumerate(zip(values, ok, strict=True)):
            problem = column.check(value)
            if not problem and column.needed_when_ok and value == "" and is_ok:
                problem = "empty in an ok row"
            if problem:
                where = f"column {position} ({column.name})" if position else f"default of column {column.name}"
                raise SchemaError(f"{path}:{lines[index]}: {where}: {problem}")
        columns[column.name] = _convert(column, values)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(raw)))


def _convert(column: Column, values: pd.Series[Any]) -> pd.Series[Any]:
    empty = values == ""
    if column.kind == "text":
        return values.mask(empty, None).astype("string")
    if column.kind == "int":
        return pd.to_numeric(values.mask(empty, None)).astype("Int64")
    if column.kind == "float":
        return pd.to_numeric(values.mask(empty, None)).astype("float64")
    if column.kind == "flag":
        return values.map({"0": False, "1": True, "": pd.NA}).astype("boolean")
    return values.map(lambda v: tuple(float(x) for x in v.split(";")) if v else ())


def read_runs(folder: Path, schema: Schema | None = None) -> pd.DataFrame:
    """``folder/runs.csv`` as a typed DataFrame; the schema from ``folder/metadata.json``'s kind by default."""
    if schema is None:
        schema = schema_of(folder)
    return schema.read(folder / "runs.csv")


def read_connections(folder: Path) -> pd.DataFrame:
    """``folder/connections.csv`` (experiment 2's per-connection timelines) as a typed DataFrame."""
    return CONNECTIONS.read(folder / "connections.csv")


def schema_of(folder: Path) -> Schema:
    """The schema of a result folder, from its ``metadata.json`` (``kind``); experiment 1 by default
    (validation sweeps are experiment 1 sweeps)."""
    import json

    try:
        kind = json.loads((folder / "metadata.json").read_text()).get("kind", "experiment1")
    except (OSError, ValueError):
        kind = "experiment1"
    if kind == "experiment2":
        return EXPERIMENT2
    return EXPERIMENT1


def _columns(specs: Iterable[tuple[str, str, str, dict[str, Any]]]) -> tuple[Column, ...]:
    return tuple(Column(name, kind, meaning, **options) for name, kind, meaning, options in specs)


_MS_OK = {"empty": True, "needed_when_ok": True}
_MAYBE = {"empty": True}
#: Columns issue 11 added (files written before it lack them; their values are then empty).
_SINCE_ISSUE11 = {"empty": True, "default": ""}
#: The runner invocation that wrote the row (``experiments.runs_folder``: its code is in metadata.json);
#: empty in rows written before invocations were recorded.
_INVOCATION = ("invocation", "text", "id of the invocation that wrote the row (metadata.json: invocations)",
               {"empty": True, "default": ""})  # fmt: skip
#: Columns issue 12 added (the page-load client); rows written before them were wget's.
_SINCE_ISSUE12 = {"empty": True, "default": ""}
#: Columns issue 16 added (timing canary, where the row was measured); empty in rows written before.
_SINCE_ISSUE16 = {"empty": True, "default": ""}
#: Columns issue 14 added (RobE_IPS, paths that change over time, the cost of robustness); files
#: written before them read them as empty.
_SINCE_ISSUE14 = {"empty": True, "default": ""}
#: What crossed the client's access links during the attempt or load (``topologies.linkcounters``:
#: iptables counters on both interfaces, TCP only); empty where not counted (rows written before
#: issue 14, time-varying runs whose connections overlap).
_WIRE = [
    (
        "wire_syns_sent",
        "int",
        "SYNs the client sent on both paths (connections and joins, retransmissions included)",
        _SINCE_ISSUE14,
    ),
    ("wire_synacks_received", "int", "SYN/ACKs the client received on both paths", _SINCE_ISSUE14),
    ("wire_rsts_sent", "int", "RSTs the client sent on both paths", _SINCE_ISSUE14),
    ("wire_rsts_received", "int", "RSTs the client received on both paths", _SINCE_ISSUE14),
    ("wire_packets", "int", "TCP packets on both paths, both directions", _SINCE_ISSUE14),
    ("wire_bytes", "int", "IP bytes of those packets", _SINCE_ISSUE14),
]

#: Experiment 1: one row per connection attempt (``experiments/experiment1.py``).
EXPERIMENT1 = Schema("experiment1", _columns([
    ("run_id", "text", "strategy-L<loss>-r<repetition>: the attempt's place in the sweep", {}),
    ("conn_id", "text", "run_id plus a random suffix: the id both endpoints log", _MAYBE),
    ("strategy", "text", "connection strategy (robe/strategies.py)", {}),
    ("loss_pct", "float", "loss on path 1 in percent (in the profile's direction)", {}),
    ("repetition", "int", "repetition number within the cell", {}),
    ("seed", "int", "loss generators' seed: sha256(profile seed : run_id)", {}),
    ("worker", "int", "index of the Figure 3 network that ran the attempt", {}),
    ("status", "text", "ok, failed (kernel gave up), censored (--timeout) or error (broken, rerun on resume)",
     {"choices": STATUSES}),
    ("setup_ms", "float", "connect() at the client -> first request bytes at the server (ms)", _MS_OK),
    ("accept_ms", "float", "connect() at the client -> accept() returned at the server (ms): the paper's metric",
     _MS_OK),
    ("established_ms", "float", "connect() -> the client saw its winning subflow established (ms)", _MAYBE),
    ("reply_ms", "float", "connect() -> the server's reply at the client (ms)", _MAYBE),
    ("winner_path", "int", "path (1 default, 2 other) whose subflow won the race", {**_MAYBE, "choices": ("1", "2")}),
    ("fallback_tcp", "flag", "the client's connection fell back to plain TCP", _MAYBE),
    ("server_mptcp", "flag", "the server's accepted socket speaks MPTCP", _MAYBE),
    ("syn_retransmits_path1", "int", "retransmissions (SYN and data) on path 1's subflow, TCP_INFO", _MAYBE),
    ("syn_retransmits_path2", "int", "retransmissions (SYN and data) on path 2's subflow, TCP_INFO", _MAYBE),
    ("joined_subflows", "int", "subflows joined after the winner", _MAYBE),
    ("subflow_ready_ms", "floats", "connect() -> each joined subflow established at the client (ms)", _MAYBE),
    ("losers_accepted", "int", "reset losers the server accepted (never counted as the connection)", _MAYBE),
    ("error", "text", "why the attempt failed or broke", _MAYBE),
    ("started_utc", "text", "when the attempt started (ISO 8601, UTC)", _MAYBE),
    ("server_subflow_ready_ms", "floats", "connect() -> each later subflow ready at the userspace server (ms)",
     {**_MAYBE, "default": ""}),
    _INVOCATION,
    ("canary_ms", "float", "timing canary: the worse of the probe bursts before and after the attempt, median "
     "RTT minus the configured RTT (ms; empty when a burst got no reply)", _SINCE_ISSUE16),
    ("canary_flagged", "flag", "measured while the host was too busy: canary error above 1 ms or a burst lost",
     _SINCE_ISSUE16),
    ("attempt_s", "float", "the worker's wall time for the attempt, canary bursts included (s)", _SINCE_ISSUE16),
    ("host", "text", "host name of the machine that ran the attempt", _SINCE_ISSUE16),
    ("kernel", "text", "kernel release of that machine", _SINCE_ISSUE16),
    ("engine_worker", "text", "Dask worker address (--cluster; empty on the local pool)", _SINCE_ISSUE16),
    ("retries", "int", "times the attempt was started again after its engine worker died (--cluster)",
     _SINCE_ISSUE16),
    ("attempts", "int", "potentially initial subflows the client opened (one SYN each before retransmissions)",
     _SINCE_ISSUE14),
    ("resets_sent", "int", "attempts the client reset (SIM's and TIMER's losers)", _SINCE_ISSUE14),
    ("subflows_end", "int", "subflows the client saw established, the initial one included", _SINCE_ISSUE14),
    ("attempt_start_s", "float", "time-varying runs: connect() since the repetition's start (s)", _SINCE_ISSUE14),
    ("due_s", "float", "time-varying runs: when the schedule had the attempt start (s)", _SINCE_ISSUE14),
    ("path1_loss_at_start", "float", "time-varying runs: path 1's scheduled loss when the attempt started (%)",
     _SINCE_ISSUE14),
    ("ips_mode", "text", "how the path order was chosen: default (no history or not IPS), ips (the history's), "
     "sim (RobE_IPS+SIM while its history trusts no path)", {**_SINCE_ISSUE14, "choices": ("default", "ips", "sim")}),
    ("path_order", "text", "the paths in the order the client tried them (;-separated, 1 = default)",
     _SINCE_ISSUE14),
    *_WIRE,
]))  # fmt: skip

#: Experiment 2: one row per page load (``experiments/experiment2.py``).
EXPERIMENT2 = Schema("experiment2", _columns([
    ("run_id", "text", "site-strategy-r<repetition>", {}),
    ("site", "text", "site name in the corpus", {}),
    ("strategy", "text", "connection strategy of the client proxy", {}),
    ("repetition", "int", "repetition number", {}),
    ("seed", "int", "seed of the load", {}),
    ("worker", "int", "index of the Figure 7 network that ran the load", {}),
    ("status", "text", "ok (complete and faithful), failed, censored (load timeout) or error", {"choices": STATUSES}),
    ("load_ms", "float", "first connection accepted by the client proxy -> last one closed (ms)", _MS_OK),
    ("wget_ms", "float", "wget's wall time (ms)", _MAYBE),
    ("objects_expected", "int", "objects of the page in the recording", _MAYBE),
    ("objects_fetched", "int", "objects wget fetched", _MAYBE),
    ("objects_served", "int", "objects the replay served", _MAYBE),
    ("replay_misses", "int", "requests without a recorded answer", _MAYBE),
    ("connections", "int", "TCP connections of the load (client proxy log)", _MAYBE),
    ("bytes_down", "int", "bytes relayed to the client", _MAYBE),
    ("bytes_up", "int", "bytes relayed from the client", _MAYBE),
    ("winner_paths", "text", "path:connections set up over it, e.g. 1:6;2:3", _MAYBE),
    ("setup_ms_median", "float", "median connection set-up time of the load (ms)", _MAYBE),
    ("max_subflows", "int", "most subflows of one connection", _MAYBE),
    ("error", "text", "why the load failed or broke", _MAYBE),
    ("started_utc", "text", "when the load started (ISO 8601, UTC)", _MAYBE),
    ("load_close_ms", "float", "first connection accepted -> last one closed by the client proxy, its close "
     "exchange with the HAAP included (ms; load_ms ends when wget ended its side)", _SINCE_ISSUE11),
    ("dns_ms", "float", "time spent in DNS lookups during the load, summed (ms)", _SINCE_ISSUE11),
    ("dns_lookups", "int", "DNS lookups wget made during the load", _SINCE_ISSUE11),
    ("pcap", "text", "capture files of the load under pcap/ (;-separated: -a1 LTE, -a2 DSL), if captured",
     _SINCE_ISSUE11),
    _INVOCATION,
    ("client", "text", "the page-load client: wget or chromium", {"empty": True, "default": "wget"}),
    ("nav_load_ms", "float", "browser: Navigation Timing, navigation start -> load event (ms)", _SINCE_ISSUE12),
    ("browser_ms", "float", "browser: the driver process's wall time, start-up included (ms)", _SINCE_ISSUE12),
    ("browser_requests", "int", "browser: requests it made", _SINCE_ISSUE12),
    ("failed_requests", "int", "browser: failed requests, not its own nor its scripts' outside the page",
     _SINCE_ISSUE12),
    ("own_requests", "int", "requests the browser made on its own (favicon), answered 404, not misses",
     _SINCE_ISSUE12),
    ("hsts_upgrades", "int", "https requests answered from an http recording (HSTS preload)", _SINCE_ISSUE12),
    ("duplicate_fetches", "int", "browser: page objects fetched more than once, extra fetches", _SINCE_ISSUE12),
    ("script_requests", "int", "browser: its scripts' requests for URLs outside the page (404)", _SINCE_ISSUE12),
    ("har", "text", "browser: the load's gzip HAR under har/, if kept", _SINCE_ISSUE12),
    ("cpu_idle_pct", "float", "both CPUs' idle share during the load (%)", _SINCE_ISSUE12),
    ("dns_extra_names", "text", "names looked up beyond the page's (;-separated)", _SINCE_ISSUE12),
    ("attempts", "int", "potentially initial subflows the client proxy opened for the load's connections "
     "(client proxy log)", _SINCE_ISSUE14),
    ("resets_sent", "int", "of those, the losers the client proxy reset", _SINCE_ISSUE14),
    *_WIRE,
    ("losers_accepted", "int", "connections the HAAP accepted that ended before any header byte: losers it "
     "had accepted before the client reset them (HAAP log)", _SINCE_ISSUE14),
    ("load_start_s", "float", "time-varying runs: wget started, since the repetition's start (s)", _SINCE_ISSUE14),
    ("due_s", "float", "time-varying runs: when the schedule had the load start (s)", _SINCE_ISSUE14),
    ("path1_loss_at_start", "float", "time-varying runs: path 1's (LTE's) scheduled loss when the load started (%)",
     _SINCE_ISSUE14),
    ("path2_loss_at_start", "float", "time-varying runs: path 2's (DSL's) scheduled loss when the load started (%)",
     _SINCE_ISSUE14),
]))  # fmt: skip

#: Experiment 2: one row per connection of a page load (``connections.csv``, written by
#: ``experiments/timeline.py``). Times are ms from wget's start, empty when not known.
CONNECTIONS = Schema("connections", _columns([
    ("run_id", "text", "the load's run_id in runs.csv", {}),
    ("site", "text", "site name in the corpus", {}),
    ("strategy", "text", "connection strategy of the client proxy", {}),
    ("repetition", "int", "repetition number", {}),
    ("conn", "int", "connection number within the load (1 = first accepted)", {}),
    ("host", "text", "origin host name", _MAYBE),
    ("dst", "text", "origin address:port", _MAYBE),
    ("scheme", "text", "http or https (or the port when neither)", _MAYBE),
    ("dns_start_ms", "float", "the lookup of the host started (first connection to a host only)", _MAYBE),
    ("dns_ms", "float", "that lookup's duration (ms)", _MAYBE),
    ("accept_ms", "float", "the client proxy accepted wget's connection (direct clients: the server did)", _MAYBE),
    ("setup_ms", "float", "the multipath connection to the HAAP was established", _MAYBE),
    ("winner_path", "int", "path of the initial subflow (0 LTE, 1 DSL)", _MAYBE),
    ("haap_accepted_ms", "float", "the HAAP accepted (its header read starts)", _SINCE_ISSUE11),
    ("haap_connected_ms", "float", "the HAAP's connection to the origin was established", _MAYBE),
    ("tls_done_ms", "float", "the origin finished its TLS handshake", _MAYBE),
    ("requests", "int", "requests the origin answered on this connection", _MAYBE),
    ("first_request_ms", "float", "the first request arrived at the origin", _MAYBE),
    ("last_response_ms", "float", "the origin handed its last response to the kernel", _MAYBE),
    ("server_ms", "float", "the origin's own time: request arrival -> answer handed over, summed (ms)",
     _SINCE_ISSUE11),
    ("first_byte_ms", "float", "the first response byte reached the client proxy", _MAYBE),
    ("last_byte_ms", "float", "the last response byte reached the client proxy", _MAYBE),
    ("client_end_ms", "float", "wget ended its side (the client proxy read its EOF)", _MAYBE),
    ("closed_ms", "float", "the connection was closed", _MAYBE),
    ("bytes_up", "int", "bytes relayed from the client", _MAYBE),
    ("bytes_down", "int", "bytes relayed to the client", _MAYBE),
    ("subflows", "int", "subflows of the connection", _MAYBE),
    ("join_path", "int", "path of the first joined subflow (0 LTE, 1 DSL)", _MAYBE),
    ("join_ms", "float", "the first joined subflow was established", _MAYBE),
    ("subflow_ports", "text", "path:local port of each subflow, initial first (;-separated), to find them in "
     "captures", _SINCE_ISSUE11),
    ("error", "text", "why the connection failed", _MAYBE),
]))  # fmt: skip
