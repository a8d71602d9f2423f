"""``robe serve`` and ``robe connect``: the endpoints as commands that experiments start in hosts.

``robe serve --bind ADDR --port N`` prints ``LISTENING {json}`` once ready, then one JSON line per
accepted socket (see ``robe.server``); SIGTERM or Ctrl-C stop it.

``robe connect --strategy S --server ADDR:PORT --source A1 [--source A2 ...]`` opens one connection
(the first source is the default path) and prints its record as one JSON line (see
``robe.client.ConnectionRecord``). Exit status: 0 connected, 1 failed or censored, 2 bad usage.

``robe agent`` opens connections on request: each stdin line is a JSON object with the keyword
arguments of ``robe.client.connect`` (``conn_id``, ``strategy``, ``server``, ``sources``,
``timer_s``, ``hold_s``, ``timeout_s``) and optionally ``history_scope`` (RobE_IPS: the name of the
path history the connection uses and feeds; default ``default``); each answer is the record as one
JSON line, or ``{"status": "error", "error": ...}`` for a bad request. Each request runs in its
own thread, so a caller may have several connections in flight (answers then come in the order
the connections end; match them by ``conn_id``). Experiments keep one agent per client host, so
no interpreter start-up competes for the CPU with another connection's timing.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
import uuid

from robe.client import ConnectError, ConnectionRecord, ConnectRequest, connect
from robe.kernel import MptcpUnavailableError
from robe.selection import shared_history
from robe.server import IDLE_TIMEOUT_S, Server
from robe.serverlog import write_record
from robe.strategies import STRATEGIES, Kind, StrategyError, kernel_strategy
from robe.userspace_endpoints import connect_userspace, is_userspace, serve_userspace
from robe_lab.cliparse import HelpFormatter, command_parser
from robe_lab.signals import raise_interrupt


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = command_parser("robe", "RobE endpoints on kernel sockets")
    sub = parser.add_subparsers(dest="command", required=True)
    # each subcommand's help shows its defaults too (robe_lab.cliparse.HelpFormatter)
    sub.add_parser = functools.partial(sub.add_parser, formatter_class=HelpFormatter)  # type: ignore[method-assign]
    serve = sub.add_parser("serve", help="accept connections and log their timing")
    serve.add_argument("--bind", required=True, help="address to listen on")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--idle-timeout", type=_positive, default=IDLE_TIMEOUT_S,
                       help=f"close connections idle this long: no request yet, or no close after the reply "
                            f"(default {IDLE_TIMEOUT_S:g} s)")  # fmt: skip
    con = sub.add_parser("connect", help="open one connection and print its timing record")
    strategies = "; ".join(
        f"{s.name}: {s.summary}" + (" (server: robe serve-user)" if s.kind is Kind.USERSPACE else "")
        for s in STRATEGIES.values()
    )
    con.add_argument("--strategy", required=True, help=strategies)
    con.add_argument("--server", required=True, help="ADDRESS:PORT")
    con.add_argument("--source", action="append", required=True,
                     help="source address of a path; repeat per path, default path first")  # fmt: skip
    con.add_argument("--timer", type=_positive, default=1.0, help="RobE_TIMER timer in seconds (default 1)")
    con.add_argument("--hold", type=_non_negative, default=0.3, help="seconds to watch subflows after the reply")
    con.add_argument("--timeout", type=_positive, default=None,
                     help="give up (status censored) after this many seconds; default: the kernel decides")  # fmt: skip
    con.add_argument("--conn-id", default=None, help="id sent in the request (default: random)")
    sub.add_parser("agent", help="open connections requested as JSON lines on stdin, answer records on stdout")
    user = sub.add_parser(
        "serve-user", help="accept userspace-transport connections (mptcp-user, robe-downgrade, robe-bbm)"
    )
    user.add_argument("--bind", required=True)
    user.add_argument("--port", type=int, required=True)
    return parser


def open_connection(request: ConnectRequest) -> ConnectionRecord:
    """One connection with any strategy: kernel sockets or the userspace transport."""
    history = shared_history(request.history_scope) if request.history_scope is not None else None
    if is_userspace(request.strategy):
        return connect_userspace(conn_id=request.conn_id, strategy=request.strategy, server=request.server,
                                 sources=list(request.sources), timer_s=request.timer_s, hold_s=request.hold_s,
                                 timeout_s=request.timeout_s, history=history)  # fmt: skip
    return connect(conn_id=request.conn_id, strategy=kernel_strategy(request.strategy), server=request.server,
                   sources=list(request.sources), timer_s=request.timer_s, hold_s=request.hold_s,
                   timeout_s=request.timeout_s, history=history)  # fmt: skip


def _serve(args: argparse.Namespace) -> int:
    try:
        server = Server(args.bind, args.port, write_record, idle_timeout_s=args.idle_timeout)
    except (OSError, MptcpUnavailableError) as err:
        print(f"robe serve: cannot listen on {args.bind}:{args.port}: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("LISTENING " + json.dumps({"bind": args.bind, "port": server.address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _connect(args: argparse.Namespace) -> int:
    try:
        record = open_connection(ConnectRequest(conn_id=args.conn_id or uuid.uuid4().hex, strategy=args.strategy,
                                                server=args.server, sources=args.source, timer_s=args.timer,
                                                hold_s=args.hold, timeout_s=args.timeout))  # fmt: skip
    except (StrategyError, ConnectError, MptcpUnavailableError) as err:
        print(f"robe connect: {err}", file=sys.stderr)
        return 2
    print(record.to_json(), flush=True)
    return 0 if record.status == "ok" else 1


def _serve_user(args: argparse.Namespace) -> int:
    def ready(port: int) -> None:
        print("LISTENING " + json.dumps({"bind": args.bind, "port": port}), flush=True)

    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        serve_userspace(args.bind, args.port, write_record, ready)
    except OSError as err:
        print(f"robe serve-user: cannot listen on {args.bind}:{args.port}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def agent_answer(line: str) -> str:
    """The JSON answer of the agent to one request line (an error record for a bad request)."""
    try:
        record = open_connection(ConnectRequest.from_json(line))
    except (ValueError, TypeError, StrategyError, ConnectError, MptcpUnavailableError) as err:
        try:
            conn_id = json.loads(line).get("conn_id")
        except (ValueError, AttributeError):
            conn_id = None
        record = ConnectionRecord.failure(conn_id if isinstance(conn_id, str) else "", f"bad request: {err}")
    return record.to_json()


def _agent() -> int:
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("READY", flush=True)  # imports are done: the caller's first request is timed cleanly
    output = threading.Lock()
    threads: list[threading.Thread] = []

    def answer(line: str) -> None:
        text = agent_answer(line)
        with output:
            print(text, flush=True)

    try:
        for line in sys.stdin:
            if line.strip():
                thread = threading.Thread(target=answer, args=(line,), daemon=True)
                thread.start()
                threads = [t for t in threads if t.is_alive()] + [thread]
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m robe``."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "agent":
        return _agent()
    if args.command == "serve-user":
        return _serve_user(args)
    return _connect(args)
