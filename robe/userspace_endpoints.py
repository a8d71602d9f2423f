"""The userspace strategies behind the same CLI and timing records as the kernel ones.

``connect_userspace`` opens one connection with a userspace strategy (``mptcp-user``,
``robe-downgrade``, ``robe-bbm``, ``robe-esim``, ``robe-ips-user``, which orders the paths with
RobE_IPS's history, ``robe.selection``, and feeds it), sending the one-line request with the CAP
(as a browser's request rides with MP_CAPABLE's third ACK), waits for the reply, watches the
subflows for ``hold_s`` and returns a ``robe.client.ConnectionRecord``. ``serve_userspace`` accepts
connections and emits the same JSON lines as ``robe.server`` (``request`` with ``accept_ns`` and
``first_bytes_ns``; ``loser`` for a subflow accepted and gone without its connection receiving
data), and ``closed`` when the client's subflows are gone, with ``subflows_ready``: when each
subflow became ready for data at the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from robe.client import ConnectError, ConnectionEvent, ConnectionRecord, SubflowSeen, check_endpoints
from robe.ips import PathHistory
from robe.selection import HistoryFeed, plan, shared_history
from robe.server import REPLY, parse_request
from robe.serverlog import Closed, Loser, Rejected, Request, ServerRecord, SubflowReady
from robe.strategies import Kind, get_strategy, is_userspace, names
from robe.userspace import ServerHandle, UserspaceClient, UserspaceServer

__all__ = ["connect_userspace", "is_userspace", "serve_userspace"]


async def _client(
    record: ConnectionRecord, server: tuple[str, int], hold_s: float, timeout_s: float | None, feed: HistoryFeed
) -> None:
    client = UserspaceClient(strategy=record.strategy, server=server, sources=record.sources,
                             order=record.path_order or None, feed=feed)  # fmt: skip
    request = json.dumps({"conn": record.conn_id}).encode() + b"\n"
    try:
        record.winner = await asyncio.wait_for(client.connect(request), timeout_s)
        established = next(e for e in client.events if e["what"] == "established")
        record.established_ns = record.request_sent_ns = established["t_ns"]
        reply = b""
        while b"\n" not in reply:
            chunk = await asyncio.wait_for(client.read(), timeout_s)
            if not chunk:
                raise ConnectionError("server closed before replying")
            reply += chunk
        record.reply_ns = time.monotonic_ns()
        await asyncio.sleep(hold_s)
        record.status = "ok"
    except TimeoutError:
        record.status, record.error = "censored", f"no connection within --timeout {timeout_s} s"
    except OSError as err:
        record.status, record.error = "failed", str(err)
    finally:
        client.abort()
        for event in client.events:
            if event["what"] == "tcp_connected" and event["sid"] in client.initial_sids:
                # The potentially initial attempts' ports, as the kernel race records them (a join on
                # the path later must not hide a reset loser's port from the server's loser count).
                record.local_ports[event["path"]] = int(event["local"].rsplit(":", 1)[1])
            if event["what"] == "subflow_ready":
                local = next((e["local"] for e in client.events
                              if e["what"] == "tcp_connected" and e["sid"] == event["sid"]), "?")  # fmt: skip
                record.subflows.append(SubflowSeen(event["t_ns"], local, record.server))
        record.events = [
            ConnectionEvent(e["t_ns"], e["what"], e.get("path"), str(e.get("reason") or e.get("error") or ""))
            for e in client.events
        ]


def connect_userspace(
    *,
    conn_id: str,
    strategy: str,
    server: str,
    sources: list[str],
    timer_s: float = 1.0,
    hold_s: float = 0.3,
    timeout_s: float | None = None,
    history: PathHistory | None = None,
) -> ConnectionRecord:
    """One connection with a userspace strategy; ``timer_s`` is unused (no timer strategy here).

    ``robe-ips-user`` orders the paths with ``history`` (default: the process's shared history) and
    reports its attempt and its joins to it; the record's events say which potentially initial
    attempts the client opened (``attempt``) and which losers it reset or abandoned (``reset``),
    as the kernel race's log does.
    """
    if not is_userspace(strategy):
        raise ConnectError(f"strategy={strategy!r}: not a userspace strategy ({', '.join(names(Kind.USERSPACE))})")
    address = check_endpoints(server, sources)
    chosen = get_strategy(strategy)
    if chosen.initial_path_selection and history is None:
        history = shared_history()
    record = ConnectionRecord(conn_id, strategy, server, list(sources))
    paths = plan(chosen, history, address[0], list(sources), time.monotonic_ns())
    record.path_order, record.ips_mode, record.ips_history = paths.order, paths.mode, paths.history
    feed = HistoryFeed(history if chosen.initial_path_selection else None, paths.key, list(sources))
    record.connect_ns = time.monotonic_ns()
    asyncio.run(_client(record, address, hold_s, timeout_s, feed))
    if record.connect_ns and record.events:
        record.connect_ns = record.events[0].t_ns  # connect_called, taken inside the loop
    return record


def serve_userspace(bind: str, port: int, emit: Callable[[ServerRecord], None], ready: Callable[[int], None]) -> None:
    """Accept userspace connections until cancelled; one ``request`` line per connection."""

    async def handle(conn: ServerHandle) -> None:
        line = b""
        while b"\n" not in line:
            try:
                chunk = await conn.read()
            except ConnectionResetError:
                return
            if not chunk:
                return
            line += chunk
        first = next(e for e in conn.events if e["what"] == "data")
        established = [e for e in server.events if e["what"] == "accepted"]
        try:
            conn_id = parse_request(line.split(b"\n", 1)[0])
        except ValueError as err:
            emit(Rejected(reason=str(err)))
            return
        assert conn.conn is not None
        initial = next(iter(conn.conn.subflows.values()), None)
        accept = next((e["t_ns"] for e in established if initial and e["sid"] == initial.sid), first["t_ns"])
        peer = next((e["peer"] for e in established if initial and e["sid"] == initial.sid), "?")
        emit(Request(conn=conn_id, accept_ns=accept, first_bytes_ns=first["t_ns"], request_done_ns=time.monotonic_ns(),
                     mptcp=True, userspace=True, peer=peer))  # fmt: skip
        conn.write(REPLY)
        with contextlib.suppress(ConnectionResetError):  # the client aborts its subflows after the hold
            while await conn.read():  # until the client ends the connection (its subflows are gone)
                pass
        peers = {e["sid"]: e["peer"] for e in server.events if e["what"] == "accepted"}
        emit(Closed(conn=conn_id, closed_ns=time.monotonic_ns(), userspace=True,
                    subflows_ready=[SubflowReady(t_ns=e["t_ns"], peer=peers.get(e["sid"], "?"), path=e["path"])
                                    for e in conn.events if e["what"] == "subflow_ready"]))  # fmt: skip

    def loser(peer: str, accept_ns: int) -> None:
        emit(Loser(peer=peer, accept_ns=accept_ns, closed_ns=time.monotonic_ns(), mptcp=True,
                   reason="gone before its connection received data"))  # fmt: skip

    server = UserspaceServer(on_connection=handle, on_loser=loser)

    async def main() -> None:
        listener = await server.listen(bind, port)
        ready(listener.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        await asyncio.Event().wait()

    asyncio.run(main())
