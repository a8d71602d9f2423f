"""One page load's connections, joined across every vantage point: the rows of ``connections.csv``.

Experiment 2 logs each load from five places, all on one clock (``time.monotonic_ns()``): the DNS
stub (``webreplay.dnsrelay``: every lookup), the client proxy (accept, set-up and winner path, bytes
and when they moved, when wget ended its side), the kernel's MPTCP events (``robe.mptcp_monitor``:
when each subflow was established), the HAAP (when it reached the origin) and the replay server
(TLS handshake done, each request's arrival and answer; ``server_ms`` sums the time from each
request's arrival to its answer handed to the kernel). ``connection_rows`` joins them by the
addresses each hop sees: the client proxy's winner address is the HAAP's peer (and the initial
subflow's address in the MPTCP events); the HAAP's origin-side address is the replay server's
peer. Without proxies (``direct`` clients) the replay server's peer is wget's own socket.

Every time in a row is in milliseconds from wget's start (``t0_ns``); empty when not known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from analysis.schema import CONNECTIONS
from robe.mptcp_monitor import MptcpEvent
from webreplay.dnsrelay import Lookup
from webreplay.replay_state import ConnectionRecord as ReplayConnection

#: Columns of connections.csv, in order (their types and meanings: ``analysis.schema.CONNECTIONS``).
CONNECTION_FIELDS = CONNECTIONS.names

LTE_SOURCE = "198.18.1.1"


def _ms(t_ns: int | None, t0_ns: int) -> str:
    return "" if t_ns is None else f"{(t_ns - t0_ns) / 1e6:.3f}"


def _by_conn(events: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """{conn: {event name: event}} (the last of each name wins)."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for event in events:
        out.setdefault(str(event.get("conn")), {})[str(event.get("event"))] = event
    return out


def _mptcp_subflows(events: Sequence[MptcpEvent]) -> dict[str, list[tuple[int, str, int]]]:
    """{"addr:port" of the initial subflow: [(t_ns, local address, local port) of each joined subflow]}."""
    token_of: dict[str | None, str] = {}
    joins: dict[str, list[tuple[int, str, int]]] = {}
    for event in events:
        if event.event == "CREATED" and event.saddr4 is not None and event.sport is not None:
            token_of[event.token] = f"{event.saddr4}:{event.sport}"
        elif event.event == "SF_ESTABLISHED" and event.token in token_of:
            joins.setdefault(token_of[event.token], []).append((event.t_ns, event.saddr4 or "", event.sport or 0))
    return joins


def _subflow_ports(local: Any, joined: list[tuple[int, str, int]], ready: Any, sources: Sequence[str]) -> str:
    """``path:port`` of every subflow the client opened (``;``-separated), to find them in captures."""
    ports = []
    if ready:  # userspace transport: each ready subflow with its local address
        ports = [f"{r['path']}:{str(r['local']).rsplit(':', 1)[1]}" for r in ready if r.get("local")]
    elif local:
        address, _, port = str(local).rpartition(":")
        ports = [f"{_path_of(address, sources)}:{port}"]
        ports += [f"{_path_of(source, sources)}:{port_}" for _, source, port_ in joined]
    return ";".join(ports)


def _path_of(address: str, sources: Sequence[str]) -> str:
    return str(sources.index(address)) if address in sources else ""


def connection_rows(
    *,
    run_id: str,
    site: str,
    strategy: str,
    repetition: int,
    t0_ns: int,
    proxy_events: Sequence[Mapping[str, Any]],
    haap_events: Sequence[Mapping[str, Any]],
    replay_connections: Sequence[ReplayConnection],
    dns_events: Sequence[Lookup],
    mptcp_events: Sequence[MptcpEvent],
    host_of: Mapping[str, str],
    sources: Sequence[str] = (LTE_SOURCE, "198.18.2.1"),
) -> list[dict[str, Any]]:
    """The connections of one load as connections.csv rows (see the module docstring).

    ``host_of`` maps origin address -> host name; ``sources`` are the client's path addresses
    (default path first), naming the joined subflow's path.
    """
    haap_by_peer = {}
    for conn, events in _by_conn(haap_events).items():
        peer = events.get("accepted", {}).get("peer")
        if peer:
            haap_by_peer[str(peer)] = (conn, events)
    replay_by_peer = {c.peer: c for c in replay_connections}
    joins = _mptcp_subflows(mptcp_events)
    lookups: dict[str, Lookup] = {}
    for query in sorted(dns_events, key=lambda e: e.t_ns):
        if query.qtype == 1:
            lookups.setdefault(query.name, query)
    seen_hosts: set[str] = set()
    rows = []
    proxied = _by_conn(proxy_events)
    if proxied:
        order = sorted(proxied.items(), key=lambda item: int(item[1].get("accepted", {}).get("t_ns", 0)))
        units = [(events.get("connected", {}).get("local"), events) for _, events in order]
    else:  # direct clients: the replay server's connections are wget's
        units = [(c.peer, {}) for c in sorted(replay_connections, key=lambda c: c.open_ns)]
    for index, (local, events) in enumerate(units, start=1):
        accepted, connected, closed = (events.get(k, {}) for k in ("accepted", "connected", "closed"))
        haap = haap_by_peer.get(str(local), ("", {}))[1] if local else {}
        origin_local = haap.get("connected", {}).get("local") if haap else None
        replay = replay_by_peer.get(str(origin_local if proxied else local))
        dst = str(closed.get("dst") or connected.get("dst") or (replay.local if replay else "") or "")
        address, _, port = dst.rpartition(":")
        host = host_of.get(address, "")
        row: dict[str, Any] = {"run_id": run_id, "site": site, "strategy": strategy, "repetition": repetition,
                               "conn": index, "host": host, "dst": dst,
                               "scheme": {"443": "https", "80": "http"}.get(port, port)}  # fmt: skip
        lookup = lookups.get(host) if host and host not in seen_hosts else None
        seen_hosts.add(host)
        if lookup is not None:
            row["dns_start_ms"] = _ms(lookup.t_ns, t0_ns)
            row["dns_ms"] = f"{(lookup.answer_ns - lookup.t_ns) / 1e6:.3f}"
        if proxied:
            setup_end = accepted.get("t_ns", 0) + connected.get("setup_ns", 0) if connected else None
            row.update(accept_ms=_ms(accepted.get("t_ns"), t0_ns), setup_ms=_ms(setup_end, t0_ns),
                       winner_path=connected.get("path", ""),
                       haap_accepted_ms=_ms(haap.get("accepted", {}).get("t_ns"), t0_ns) if haap else "",
                       haap_connected_ms=_ms(haap.get("connected", {}).get("t_ns"), t0_ns) if haap else "",
                       first_byte_ms=_ms(closed.get("first_down_ns"), t0_ns),
                       last_byte_ms=_ms(closed.get("last_down_ns"), t0_ns),
                       client_end_ms=_ms(closed.get("up_eof_ns"), t0_ns), closed_ms=_ms(closed.get("t_ns"), t0_ns),
                       bytes_up=closed.get("bytes_up", ""), bytes_down=closed.get("bytes_down", ""),
                       subflows=closed.get("subflows") if closed.get("subflows") is not None else "",
                       error=closed.get("error") or "")  # fmt: skip
            ready = closed.get("ready")
            if ready:  # userspace transport: when each subflow became ready, by path
                winner = connected.get("path")
                later = [r for r in ready if r.get("event") == "subflow_ready" and r.get("path") != winner]
                if later:
                    row.update(join_path=later[0]["path"], join_ms=_ms(int(later[0]["t_ns"]), t0_ns))
        elif replay is not None:
            row.update(accept_ms=_ms(replay.open_ns, t0_ns), closed_ms=_ms(replay.close_ns, t0_ns),
                       bytes_down=replay.wire_bytes)  # fmt: skip
        joined = joins.get(str(local), []) if local else []
        if joined and not row.get("join_ms"):
            t_ns, source, _ = joined[0]
            row.update(join_path=_path_of(source, sources), join_ms=_ms(t_ns, t0_ns))
            if not proxied:
                row["subflows"] = 1 + len(joined)
        row["subflow_ports"] = _subflow_ports(local, joined, closed.get("ready"), sources)
        if replay is not None:
            requests = replay.request_log
            row.update(tls_done_ms=_ms(replay.tls_ns, t0_ns), requests=len(requests))
            if requests:
                served_ns = sum(q.tx_ns - q.rx_ns for q in requests)
                row.update(first_request_ms=_ms(requests[0].rx_ns, t0_ns),
                           last_response_ms=_ms(requests[-1].tx_ns, t0_ns),
                           server_ms=f"{served_ns / 1e6:.3f}")  # fmt: skip
        rows.append({key: row.get(key, "") for key in CONNECTION_FIELDS})
    return rows
