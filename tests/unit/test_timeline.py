"""connections.csv rows: the client proxy, HAAP, replay, DNS and MPTCP logs of one load joined."""

from typing import Any

from experiments.timeline import CONNECTION_FIELDS, connection_rows
from robe.mptcp_monitor import MptcpEvent
from webreplay.dnsrelay import Lookup
from webreplay.replay_state import ConnectionRecord as ReplayConnection
from webreplay.replay_state import connection_log

MS = 1_000_000


def _replay(*connections: dict[str, Any]) -> list[ReplayConnection]:
    """The replay server's connection log as its stats answer carries it (JSON), read back."""
    request = {"target": "/", "status": 200, "bytes": 100, "host": "a.example", "kind": "served"}
    entries = [{"id": i, "tls": False, **c, "request_log": [{**request, **r} for r in c.get("request_log", [])]}
               for i, c in enumerate(connections)]  # fmt: skip
    return connection_log({"connection_log": entries})


def _proxy(conn: str, t: int, local: str, dst: str, **closed: object) -> list[dict[str, object]]:
    return [
        {"event": "accepted", "conn": conn, "t_ns": t * MS},
        {"event": "connected", "conn": conn, "t_ns": (t + 31) * MS, "setup_ns": 30 * MS, "path": 1, "local": local,
         "dst": dst},
        {"event": "closed", "conn": conn, "t_ns": (t + 200) * MS, "dst": dst, "first_down_ns": (t + 80) * MS,
         "last_down_ns": (t + 120) * MS, "up_eof_ns": (t + 150) * MS, "bytes_up": 500, "bytes_down": 9000,
         "subflows": 2, "error": None, **closed},
    ]  # fmt: skip


def test_a_proxied_load_is_joined_by_addresses_and_timed_from_wget_start():
    t0 = 1000 * MS
    proxy = _proxy("c1", 1010, "198.18.2.1:40000", "198.19.0.1:443") + _proxy("c2", 1300, "198.18.2.1:40002",
                                                                              "198.19.0.2:80")  # fmt: skip
    haap = [{"event": "accepted", "conn": "h1", "peer": "198.18.2.1:40000", "t_ns": 1025 * MS},
            {"event": "connected", "conn": "h1", "local": "198.18.4.1:5000", "t_ns": 1030 * MS}]  # fmt: skip
    requests = [{"rx_ns": 1070 * MS, "tx_ns": 1071 * MS}, {"rx_ns": 1100 * MS, "tx_ns": 1105 * MS}]
    replay = _replay({"peer": "198.18.4.1:5000", "local": "198.19.0.1:443", "open_ns": 1032 * MS, "close_ns": 1250 * MS,
                      "tls": True, "tls_ns": 1060 * MS, "request_log": requests})  # fmt: skip
    dns = [Lookup(1002 * MS, 1004 * MS, "a.example", 1, 0, False),
           Lookup(1002 * MS, 1005 * MS, "a.example", 28, 0, False),
           Lookup(1290 * MS, 1291 * MS, "b.example", 1, 0, False)]  # fmt: skip
    mptcp = [
        MptcpEvent(event="CREATED", token="ab", saddr4="198.18.2.1", sport=40000, t_ns=1040 * MS),
        MptcpEvent(event="SF_ESTABLISHED", token="ab", saddr4="198.18.1.1", sport=50000, t_ns=1095 * MS),
        MptcpEvent(event="SF_ESTABLISHED", token="zz", saddr4="198.18.1.1", sport=50001, t_ns=1096 * MS),
    ]
    rows = connection_rows(run_id="r", site="s", strategy="robe-sim", repetition=0, t0_ns=t0, proxy_events=proxy,
                           haap_events=haap, replay_connections=replay, dns_events=dns, mptcp_events=mptcp,
                           host_of={"198.19.0.1": "a.example", "198.19.0.2": "b.example"})  # fmt: skip
    assert [list(r) for r in rows] == [CONNECTION_FIELDS, CONNECTION_FIELDS]
    first, second = rows
    assert (first["host"], first["scheme"], first["dns_start_ms"], first["dns_ms"]) == ("a.example", "https", "2.000",
                                                                                        "2.000")  # fmt: skip
    assert (first["accept_ms"], first["setup_ms"], first["haap_connected_ms"], first["tls_done_ms"]) == (
        "10.000",
        "40.000",
        "30.000",
        "60.000",
    )
    assert (first["requests"], first["first_request_ms"], first["last_response_ms"]) == (2, "70.000", "105.000")
    assert (first["haap_accepted_ms"], first["server_ms"]) == ("25.000", "6.000")
    assert (first["first_byte_ms"], first["last_byte_ms"], first["client_end_ms"]) == ("90.000", "130.000", "160.000")
    assert (first["join_path"], first["join_ms"], first["subflow_ports"]) == ("0", "95.000", "1:40000;0:50000")
    # The second connection: another host, no HAAP line (so no replay record), its own lookup.
    assert (second["host"], second["scheme"], second["dns_ms"], second["tls_done_ms"]) == ("b.example", "http",
                                                                                          "1.000", "")  # fmt: skip


def test_a_direct_load_takes_its_connections_from_the_replay_server():
    replay = _replay({"peer": "198.18.1.1:40000", "local": "198.19.0.1:80", "open_ns": 5 * MS, "close_ns": 50 * MS,
                      "wire_bytes": 1234, "request_log": [{"rx_ns": 6 * MS, "tx_ns": 7 * MS}]})  # fmt: skip
    mptcp = [
        MptcpEvent(event="CREATED", token="1", saddr4="198.18.1.1", sport=40000, t_ns=5 * MS),
        MptcpEvent(event="SF_ESTABLISHED", token="1", saddr4="198.18.2.1", sport=40001, t_ns=20 * MS),
    ]
    (row,) = connection_rows(run_id="r", site="s", strategy="direct-mptcp", repetition=1, t0_ns=0, proxy_events=[],
                             haap_events=[], replay_connections=replay, dns_events=[], mptcp_events=mptcp,
                             host_of={"198.19.0.1": "a.example"})  # fmt: skip
    assert (row["host"], row["accept_ms"], row["closed_ms"], row["bytes_down"]) == ("a.example", "5.000", "50.000",
                                                                                   1234)  # fmt: skip
    assert (row["subflows"], row["join_path"], row["join_ms"], row["subflow_ports"]) == (2, "1", "20.000",
                                                                                        "0:40000;1:40001")  # fmt: skip
