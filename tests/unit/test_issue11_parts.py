"""Small parts of experiment 2's fidelity work: the MPTCP event parser, the synthetic page, the
overhead fit, the ablation's bootstrap, and the packet report on a capture built here."""

import gzip
import socket
from pathlib import Path

import dpkt
import numpy as np
import pandas as pd
import pytest

from analysis.ablation import bootstrap
from analysis.overhead import fit
from analysis.packets import connection_report, read_segments
from analysis.tables import markdown
from experiments.profile2 import load_profile2
from robe.mptcp_monitor import MptcpEvent, parse_event, read_events
from robe_lab.records import RecordError
from webreplay.corpus import load_site
from webreplay.synthetic import content_hash, parse_name


def test_mptcp_monitor_lines_become_events():
    line = (
        "[SF_ESTABLISHED] token=0a1b2c3d remid=0 locid=2 saddr4=198.18.2.1 daddr4=198.18.4.1 sport=40001 "
        "dport=8080 backup=0"
    )
    event = parse_event(line, 7)
    assert event == MptcpEvent(t_ns=7, event="SF_ESTABLISHED", token="0a1b2c3d", saddr4="198.18.2.1",
                               daddr4="198.18.4.1", sport=40001, dport=8080,
                               fields={"remid": 0, "locid": 2, "backup": 0})  # fmt: skip
    created = parse_event("[       CREATED] token=00000012 sport=1")
    assert created is not None and created.token == "00000012"
    assert parse_event("garbage") is None


def test_mptcp_monitor_log_is_read_back_as_written(tmp_path):
    log = tmp_path / "mptcp.log"
    events = [parse_event("[SF_ESTABLISHED] token=0a saddr4=198.18.2.1 sport=40001 locid=2", 5),
              parse_event("[CLOSED] token=0a", 9)]  # fmt: skip
    log.write_text("".join(e.to_line() + "\n" for e in events if e) + '{"t_ns": 11, "event": "CLO')  # one half-written
    read, offset = read_events(log, 0)
    assert read == events and offset == log.stat().st_size - len('{"t_ns": 11, "event": "CLO')
    log.write_text('{"t_ns": "soon", "event": "CLOSED"}\n')
    with pytest.raises(RecordError, match="t_ns='soon'"):
        read_events(log, 0)


def test_the_synthetic_page_is_n_objects_of_s_bytes_on_one_host():
    site = load_site("synthetic", "30x1k")
    assert parse_name("30x1k") == (30, 1000) and parse_name("5x200") == (5, 200)
    assert len(site.exchanges) == 31 and len(site.hosts()) == 1
    objects = site.exchanges[1:]
    assert all(len(e.body) == 1000 and e.scheme == "https" for e in objects)
    main = site.exchanges[0].body.decode()
    assert all(e.url in main for e in objects) and site.main_url == site.exchanges[0].url


def test_a_synthetic_profile_has_a_fingerprint_that_follows_the_generated_content():
    profile = load_profile2("abl-synthetic")  # corpus "synthetic": no recording to hash
    assert profile.corpus_hash() == content_hash(profile.sites) == content_hash(list(profile.sites) * 2)
    assert len(profile.fingerprint()) == 16
    assert content_hash(["30x1k"]) != content_hash(["30x2k"]) != content_hash(["31x1k"])


def test_the_overhead_fit_recovers_per_connection_and_per_request_costs():
    rng = np.random.default_rng(1)
    http, https, objects = rng.integers(0, 8, 60), rng.integers(0, 8, 60), rng.integers(5, 60, 60)
    wget_ms = 20 + 1.5 * http + 4.0 * https + 0.8 * objects + rng.normal(0, 0.05, 60)
    loads = pd.DataFrame({"http_connections": http, "https_connections": https, "objects_expected": objects,
                          "wget_ms": wget_ms})  # fmt: skip
    result = fit(loads)
    assert abs(result["per_http_conn"] - 1.5) < 0.05 and abs(result["per_https_conn"] - 4.0) < 0.05
    assert abs(result["per_request"] - 0.8) < 0.01 and abs(result["base"] - 20) < 0.5
    table = markdown(pd.DataFrame({"x": [1.234]}, index=pd.Index(["a"], name="k")), 1)
    assert table.splitlines() == ["| k | x |", "|---|---|", "| a | 1.2 |"]


def test_the_improvement_interval_covers_the_point_and_reflects_the_spread():
    rng = np.random.default_rng(2)
    classic, robe = rng.normal(150, 5, 30), rng.normal(100, 5, 30)
    point, low, high = bootstrap([(classic, robe)], rng)
    assert low < point < high and abs(point - 0.5) < 0.05 and high - low < 0.1


def _segment(src: str, dst: str, sport: int, dport: int, flags: int, payload: int) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, off=5, data=b"x" * payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    return bytes(dpkt.ethernet.Ethernet(data=ip, type=dpkt.ethernet.ETH_TYPE_IP))


def test_the_packet_report_counts_requests_per_path_after_the_join(tmp_path: Path):
    syn, ack, psh = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK
    haap, lte, dsl = "198.18.4.1", "198.18.1.1", "198.18.2.1"
    lte_packets = [
        (0.000, lte, haap, syn, 0),
        (0.040, haap, lte, syn | ack, 0),
        (0.041, lte, haap, psh, 500),
        (0.090, haap, lte, psh, 3000),
        (0.200, lte, haap, psh, 400),
        (0.210, lte, haap, psh, 16),
    ]
    dsl_packets = [(0.080, dsl, haap, syn, 0), (0.100, haap, dsl, syn | ack, 0), (0.250, haap, dsl, psh, 1400)]
    for name, packets, port in (("a1", lte_packets, 40000), ("a2", dsl_packets, 40001)):
        with gzip.open(tmp_path / f"{name}.pcap.gz", "wb") as handle:
            writer = dpkt.pcap.Writer(handle)
            for t, src, dst, flags, size in packets:
                up = src != haap
                writer.writepkt(_segment(src, dst, port if up else 8080, 8080 if up else port, flags, size), ts=t)
    segments = read_segments(tmp_path / "a1.pcap.gz", 0) + read_segments(tmp_path / "a2.pcap.gz", 1)
    conn = pd.Series({"run_id": "r", "site": "s", "strategy": "mptcp", "conn": 1, "subflow_ports": "0:40000;1:40001"})
    row = connection_report(segments, conn)
    assert row is not None
    # The join's SYN/ACK at 100 ms plus its 20 ms round trip: usable from 120 ms.
    assert abs(float(str(row["join_usable_ms"])) - 120) < 1e-6
    assert abs(float(str(row["join_first_data_ms"])) - 250) < 1e-6
    assert (row["requests_initial_before"], row["requests_initial_after"], row["requests_joined_after"]) == (1, 1, 0)
    assert (row["down_bytes_initial_before"], row["down_bytes_joined_after"]) == (3000, 1400)
