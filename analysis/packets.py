"""Packets, not guesses: which path carried the requests and the responses once a second subflow
had joined, read from the captures of ``experiment2 --pcap N``.

Each captured load has one pcap per access link (``<run_id>-a1.pcap[.gz]``: LTE, path 0;
``-a2``: DSL, path 1), headers only. ``connections.csv`` names each connection's subflows by the
client's local port (``subflow_ports``: ``path:port``), so every TCP segment is assigned to a
connection and a subflow. Per connection:

* ``join_usable_ms``: when the joined subflow could first carry data, estimated at the client as
  its SYN/ACK plus one more round trip of its path (the kernel's MP_JOIN is fully established at
  the fourth ACK; the userspace JOIN at its DATA_ACK), from the connection's first SYN;
* ``join_first_data_ms``: when the joined subflow first carried a segment of >= 100 bytes, either
  way (the userspace transport's JOIN frames are payload too, and smaller);
* after ``join_usable``: the client's request-sized segments (payload >= 100 bytes: HTTP requests,
  TLS records; the userspace transport's 16-byte DATA_ACK frames and kernel ACKs stay out) and the
  server's payload bytes, on the initial and on the joined subflow.

``python -m analysis.packets FOLDER`` writes ``packets.csv`` (one row per captured connection) and
``packets.md`` (per strategy: how many requests and response bytes rode each path after the join).
"""

from __future__ import annotations

import gzip
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dpkt
import pandas as pd

from analysis.schema import EXPERIMENT2, read_connections, read_runs
from analysis.tables import markdown, per_folder_main

CLIENT_ADDRESSES = ("198.18.1.1", "198.18.2.1")
LINKS = {"a1": 0, "a2": 1}
REQUEST_MIN_BYTES = 100
PATH_NAMES = {0: "LTE", 1: "DSL"}


@dataclass(frozen=True)
class Segment:
    """One captured TCP segment, seen from the client."""

    t: float  # seconds (capture clock)
    path: int  # 0: LTE (a1), 1: DSL (a2)
    client_port: int
    upstream: bool  # client -> server
    payload: int
    syn: bool
    ack: bool


def read_segments(path: Path, link_path: int) -> list[Segment]:
    """The TCP segments of one capture file (plain or gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    segments = []
    with opener(path, "rb") as handle:
        for t, frame in dpkt.pcap.Reader(handle):
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            source = socket.inet_ntoa(ip.src)
            upstream = source in CLIENT_ADDRESSES
            payload = ip.len - ip.hl * 4 - tcp.off * 4  # the real length (the capture is truncated)
            segments.append(Segment(float(t), link_path, tcp.sport if upstream else tcp.dport, upstream, payload,
                                    bool(tcp.flags & dpkt.tcp.TH_SYN), bool(tcp.flags & dpkt.tcp.TH_ACK)))  # fmt: skip
    return segments


def _ports(text: object) -> list[tuple[int, int]]:
    """``"0:43235;1:34401"`` -> [(0, 43235), (1, 34401)] (the first is the initial subflow)."""
    out: list[tuple[int, int]] = []
    for item in str(text).split(";") if isinstance(text, str) else []:
        path, _, port = item.partition(":")
        if path.isdigit() and port.isdigit() and (int(path), int(port)) not in out:
            out.append((int(path), int(port)))
    return out


def connection_report(segments: list[Segment], conn: pd.Series) -> dict[str, object] | None:
    """What one connection's subflows carried (see the module docstring); None when not captured."""
    ports = _ports(conn.get("subflow_ports"))
    if not ports:
        return None
    mine = {(path, port): [s for s in segments if s.path == path and s.client_port == port] for path, port in ports}
    initial = ports[0]
    if not mine[initial]:
        return None
    start = min(s.t for s in mine[initial])
    row: dict[str, object] = {"run_id": conn["run_id"], "site": conn["site"], "strategy": conn["strategy"],
                              "conn": conn["conn"], "initial_path": initial[0], "subflows": len(ports)}  # fmt: skip
    joined = next(((p, q) for p, q in ports[1:] if p != initial[0] and mine[(p, q)]), None)
    if joined is None:
        usable = float("inf")
    else:
        flow = mine[joined]
        syn = min(s.t for s in flow if s.syn and s.upstream) if any(s.syn and s.upstream for s in flow) else flow[0].t
        synack = [s.t for s in flow if s.syn and s.ack and not s.upstream]
        usable = synack[0] + (synack[0] - syn) if synack else syn
        data = [s.t for s in flow if s.payload >= REQUEST_MIN_BYTES]  # not the userspace JOIN frames
        row.update(join_path=joined[0], join_syn_ms=(syn - start) * 1e3, join_usable_ms=(usable - start) * 1e3,
                   join_first_data_ms=(data[0] - start) * 1e3 if data else None)  # fmt: skip
    for name, key in (("initial", initial), ("joined", joined)):
        flow = mine.get(key, []) if key is not None else []
        before = [s for s in flow if s.t < usable]
        after = [s for s in flow if s.t >= usable]
        for when, part in (("before", before), ("after", after)):
            row[f"requests_{name}_{when}"] = sum(1 for s in part if s.upstream and s.payload >= REQUEST_MIN_BYTES)
            row[f"down_bytes_{name}_{when}"] = sum(s.payload for s in part if not s.upstream)
    return row


def folder_report(folder: Path) -> pd.DataFrame:
    """One row per captured connection of an experiment 2 folder."""
    runs = read_runs(folder, EXPERIMENT2).drop_duplicates("run_id", keep="last")
    conns = read_connections(folder).drop_duplicates(["run_id", "conn"], keep="last")
    rows = []
    for _, run in runs[runs["pcap"].notna() & (runs["status"] == "ok")].iterrows():
        segments: list[Segment] = []
        for name in str(run["pcap"]).split(";"):
            link = name.rsplit("-", 1)[1].split(".")[0]
            segments += read_segments(folder / "pcap" / name, LINKS[link])
        for _, conn in conns[conns["run_id"] == run["run_id"]].iterrows():
            row = connection_report(segments, conn)
            if row is not None:
                rows.append(row)
    return pd.DataFrame(rows)


def strategy_summary(report: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: requests and response bytes on each path after the join, and join timing."""
    joined = report[report["join_path"].notna()] if "join_path" in report else report.iloc[0:0]
    rows = []
    for strategy, group in report.groupby("strategy"):
        part = joined[joined["strategy"] == strategy]
        initial_path = int(group["initial_path"].mode().iloc[0])
        req_i, req_j = int(part["requests_initial_after"].sum()), int(part["requests_joined_after"].sum())
        down_i, down_j = int(part["down_bytes_initial_after"].sum()), int(part["down_bytes_joined_after"].sum())
        rows.append({
            "strategy": strategy,
            "connections": len(group),
            "initial path": PATH_NAMES.get(initial_path, initial_path),
            "with a join": len(part),
            "join usable [ms]": part["join_usable_ms"].median() if len(part) else float("nan"),
            "joined first data [ms]": part["join_first_data_ms"].median() if len(part) else float("nan"),
            "requests after join on initial": req_i,
            "requests after join on joined": req_j,
            "response kB after join on initial": round(down_i / 1000, 1),
            "response kB after join on joined": round(down_j / 1000, 1),
            "requests before join (initial)": int(group["requests_initial_before"].sum()),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("strategy")


def write_report(folder: Path) -> str:
    """packets.csv and packets.md in ``folder``; returns the Markdown."""
    report = folder_report(folder)
    if report.empty:
        return f"{folder}: no captured loads (run with --pcap N)\n"
    report.to_csv(folder / "packets.csv", index=False, float_format="%.3f")
    summary = strategy_summary(report)
    text = (f"# Packets ({folder.name}): which path carried requests and responses after the join\n\n"
            f"{len(report)} connections of {report['run_id'].nunique()} captured loads. Requests: client segments of "
            f">= {REQUEST_MIN_BYTES} bytes; times in ms from the connection's first SYN (medians).\n\n"
            f"{markdown(summary, 1)}\n")  # fmt: skip
    (folder / "packets.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one report per folder."""
    return per_folder_main("analysis.packets", __doc__ or "", write_report, argv)


if __name__ == "__main__":
    sys.exit(main())
