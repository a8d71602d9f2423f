"""The origin replay server of experiment 2: recorded responses over HTTP/1.1 (asyncio + h11).

One process holds every origin of the replayed pages (in experiment 2: one Mininet host holding
every origin address, listening on 0.0.0.0:80 and 0.0.0.0:443 with one certificate covering every
host name). It answers each request from the *active site*'s recorded exchanges:

* key: the listener's scheme, the Host header (lower case, port and trailing dot stripped; the
  authority of an absolute-form target wins) and the request target; HEAD is looked up as GET;
* exact match on (method, scheme, host, target) first (the first recording wins on duplicates);
* else Mahimahi's replay rule: same method, scheme and host, both targets carrying a query and
  equal up to the '?', and the longest common prefix of the targets wins (first on ties);
* else ``404`` counted as a replay miss, with its URL.

Responses are the recorded status, reason and headers (framing and hop-by-hop headers dropped)
with ``Content-Length`` framing of the recorded body; keep-alive and pipelining follow h11.

Bounds (``ServerLimits``): request head size (h11's ``max_incomplete_event_size`` plus an
explicit check of the parsed head, answered ``431``), request bodies read and discarded up to a
limit (``413``), an idle timeout per connection (also bounding slow writes and TLS handshakes), a
deadline for each whole request from its first byte (``408``: a client dripping its head never
holds a connection for long), and a cap on open connections (further connections are reset at
once and counted). Every control line gets an answer, malformed bytes and deep nesting included. Malformed requests
get h11's ``400`` and the connection closes; the reason is logged and kept in the stats.

Because two sites may record the same host, exactly one site is active at a time, switched through
a control channel: a Unix-domain socket (a path, so it works across network namespaces) taking one
JSON object per line and answering one JSON object per line (``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``):

* ``{"cmd": "ping"}``: ``{"ok": true, "pid": N, "active": {"corpus": C, "site": S} | null}``;
* ``{"cmd": "activate", "site": NAME}`` (plus ``"corpus"`` when two corpora have that name):
  later requests use that site; answers the new ``active``;
* ``{"cmd": "stats"}``: ``{"ok": true, "stats": {...}}``: served responses, body and wire bytes,
  misses with their URLs, protocol errors with reasons, connection counters and the connection
  log (open/close ``time.monotonic_ns()``, peer, local address, TLS, requests, bytes, close reason);
* ``{"cmd": "reset"}``: zero the counters and logs (connections still open stay in the log with
  zeroed counts).

Run as ``python -m webreplay.server --corpus-spec SPEC.json --control PATH --cert C --key K``
(see ``replay_server_command``); the spec lists (corpus, site) pairs loaded through
``webreplay.corpus.load_site``. The process prints one ``READY {json}`` line on stdout once every
socket listens, and stops cleanly on SIGTERM or SIGINT.

Code layout: this module holds the server (``ReplayServer``: listeners, connections, the control
socket; ``server_ssl_context``) and the process's command line (``parse_args``, ``main``).
``webreplay.replay_config`` holds the settings (``Listener``, ``ServerLimits``, the errors),
``webreplay.replay_index`` the lookup of recorded answers, ``webreplay.replay_state`` the counters,
logs, active site and control commands, ``webreplay.replay_http`` the h11 loop of one connection,
and ``webreplay.replay_client`` what a controlling process uses (``replay_server_command``, the
corpus spec, ``control_request``); their names are importable from this module too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import ssl
import stat
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from robe_lab.cliparse import command_parser
from webreplay.model import Site
from webreplay.replay_client import control_request, corpus_spec_text, parse_corpus_spec, replay_server_command
from webreplay.replay_config import (
    TLS_VERSIONS,
    Listener,
    ReplayConfigError,
    ReplayControlError,
    ServerLimits,
    _check_int,
    _check_seconds,
    parse_listen,
)
from webreplay.replay_http import (
    BODYLESS_STATUSES,
    LINGER_BYTES,
    LINGER_S,
    READ_CHUNK,
    _CloseConnectionError,
    _HttpConnection,
    _simple_response,
)
from webreplay.replay_index import (
    DROPPED_HEADERS,
    ExchangeIndex,
    PreparedResponse,
    _common_prefix,
    _header_bytes,
    _reason,
    prepare_response,
    request_authority,
)
from webreplay.replay_state import ConnectionRecord, Counters, ReplayState, _endpoint

# Every name this module had before its split stays importable from here (experiments and tests use them).
__all__ = [
    "BODYLESS_STATUSES",
    "CLOSE_TIMEOUT_S",
    "DROPPED_HEADERS",
    "LINGER_BYTES",
    "LINGER_S",
    "MAX_UNIX_PATH",
    "READ_CHUNK",
    "ConnectionRecord",
    "Counters",
    "ExchangeIndex",
    "Listener",
    "PreparedResponse",
    "ReplayConfigError",
    "ReplayControlError",
    "ReplayServer",
    "ReplayState",
    "ServerLimits",
    "_CloseConnectionError",
    "_HttpConnection",
    "_build",
    "_check_int",
    "_check_seconds",
    "_close",
    "_common_prefix",
    "_endpoint",
    "_header_bytes",
    "_prepare_control_path",
    "_reason",
    "_serve",
    "_simple_response",
    "control_request",
    "corpus_spec_text",
    "main",
    "parse_args",
    "parse_corpus_spec",
    "parse_listen",
    "prepare_response",
    "replay_server_command",
    "request_authority",
    "server_ssl_context",
]

log = logging.getLogger(__name__)

#: Longest Unix-domain socket path (sun_path is 108 bytes including the terminating NUL).
MAX_UNIX_PATH = 107
CLOSE_TIMEOUT_S = 2.0
IPPROTO_MPTCP = 262


# ---------------------------------------------------------------------------------------------
# Network side.


def server_ssl_context(cert: Path | str, key: Path | str, tls_max: str | None = None) -> ssl.SSLContext:
    """TLS server context with the issued certificate: TLS 1.2+ (at most ``tls_max``: "1.2" or "1.3"),
    ALPN offering only HTTP/1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls_max is not None:
        if tls_max not in TLS_VERSIONS:
            raise ReplayConfigError(f"tls_max={tls_max!r}: must be one of {', '.join(TLS_VERSIONS)}")
        context.maximum_version = ssl.TLSVersion.TLSv1_2 if tls_max == "1.2" else ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as err:
        raise ReplayConfigError(f"cert={str(cert)!r} key={str(key)!r}: cannot load ({err})") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _prepare_control_path(path: Path) -> None:
    """Refuse a path too long for a Unix socket or held by a live server; remove a stale socket."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ReplayConfigError(f"control={str(path)!r}: longer than {MAX_UNIX_PATH} bytes (Unix socket limit)")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ReplayConfigError(f"control={str(path)!r}: exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise ReplayConfigError(f"control={str(path)!r}: another server is listening there")


class ReplayServer:
    """Listeners, connections and the control socket around one ``ReplayState``."""

    def __init__(
        self,
        sites: Sequence[Site],
        listeners: Sequence[Listener],
        *,
        control_path: Path | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        limits: ServerLimits | None = None,
        active: str | None = None,
        mptcp: bool = False,
    ) -> None:
        if not listeners:
            raise ReplayConfigError("listeners: empty; give at least one (ip, port, tls)")
        for listener in listeners:
            if listener.tls and ssl_context is None:
                raise ReplayConfigError(f"listener {listener.ip}:{listener.port} is TLS but no certificate was given")
        self.state = ReplayState(sites, limits or ServerLimits(), active)
        self.listeners = list(listeners)
        self.control_path = Path(control_path) if control_path is not None else None
        self.ssl_context = ssl_context
        self.mptcp = mptcp  # listen on MPTCP sockets (TCP clients fall back to TCP on them)
        self.bound: list[Listener] = []
        self._servers: list[asyncio.Server] = []
        self._control_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Bind every listener and the control socket; ``bound`` then holds the actual ports."""
        try:
            for listener in self.listeners:
                handler = functools.partial(self._accept, listener=listener)
                if self.mptcp:
                    server = await asyncio.start_server(handler, sock=_mptcp_listener(listener), backlog=1024,
                                                        limit=READ_CHUNK)  # fmt: skip
                else:
                    server = await asyncio.start_server(handler, host=listener.ip, port=listener.port,
                                                        reuse_address=True, backlog=1024, limit=READ_CHUNK)  # fmt: skip
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
                self.bound.append(Listener(listener.ip, port, listener.tls))
            if self.control_path is not None:
                _prepare_control_path(self.control_path)
                self._control_server = await asyncio.start_unix_server(
                    self._control_client, path=str(self.control_path), limit=READ_CHUNK
                )
                self.control_path.chmod(0o600)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening, end every connection, remove the control socket."""
        for server in self._servers:
            server.close()
        if self._control_server is not None:
            self._control_server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        if self._control_server is not None and self.control_path is not None:
            await self._control_server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.control_path.unlink()
            self._control_server = None
        self._servers.clear()

    def ready_info(self) -> dict[str, Any]:
        """What the ``READY`` line reports: pid, bound listeners, control path, sites, active site."""
        return {
            "pid": os.getpid(),
            "listeners": [listener.to_dict() for listener in self.bound],
            "control": str(self.control_path) if self.control_path else None,
            "sites": [
                {"corpus": c, "site": n, "exchanges": len(i.site.exchanges), "hosts": len(i.site.hosts())}
                for (c, n), i in self.state.indexes.items()
            ],
            "active": self.state.active_info(),
        }

    def _track(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener) -> None:
        task = self._track()
        if self.mptcp:  # asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets
            with contextlib.suppress(OSError):
                writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = _endpoint(writer.get_extra_info("peername"))
        local = _endpoint(writer.get_extra_info("sockname"))
        record = self.state.open_connection(peer, local, listener.tls)
        if record is None:
            log.warning("connection from %s rejected: %d open (max_connections)", peer, len(self.state.open))
            writer.transport.abort()
            self._tasks.discard(task)
            return
        reason = "server stopped"
        try:
            if listener.tls:
                # Straight after accept (no await before it), so the ClientHello reaches TLS.
                assert self.ssl_context is not None  # checked in __init__
                timeout = self.state.limits.handshake_timeout_s
                try:
                    await writer.start_tls(self.ssl_context, ssl_handshake_timeout=timeout)
                except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as err:
                    self.state.counters.tls_failures += 1
                    reason = f"TLS handshake failed: {err!r}"
                    log.info("%s: %s", peer, reason)
                    return
                record.tls_ns = time.monotonic_ns()
            reason = await _HttpConnection(self.state, listener, record, reader, writer).run()
        finally:
            self.state.close_connection(record, reason)
            await _close(writer)
            self._tasks.discard(task)

    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._track()
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(json.dumps({"ok": False, "error": f"line longer than {READ_CHUNK} bytes"}).encode())
                    writer.write(b"\n")
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                answer = _control_answer(self.state, line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            await _close(writer)
            self._tasks.discard(task)


def _mptcp_listener(listener: Listener) -> socket.socket:
    """A bound MPTCP stream socket for ``listener`` (ReplayConfigError when MPTCP is unavailable)."""
    family = socket.AF_INET6 if ":" in listener.ip else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    except OSError as err:
        raise ReplayConfigError(f"--mptcp: MPTCP socket refused ({err.strerror})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listener.ip, listener.port))
    except OSError:
        sock.close()
        raise
    return sock


def _control_answer(state: ReplayState, line: bytes) -> dict[str, Any]:
    """The answer to one control line: every input gets one, bad bytes and absurd nesting included."""
    try:
        command = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return {"ok": False, "error": f"not UTF-8: {err}"}
    except json.JSONDecodeError as err:
        return {"ok": False, "error": f"not JSON: {err}"}
    except RecursionError:
        return {"ok": False, "error": "not JSON this server reads: nested too deeply"}
    try:
        return state.control(command)
    except Exception as err:  # a command must never leave its client without an answer
        log.exception("control command failed")
        return {"ok": False, "error": f"internal error: {type(err).__name__}: {err}"}


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()


# ---------------------------------------------------------------------------------------------
# Command line of the server process (``replay_server_command`` in webreplay.replay_client builds it).


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``replay_server_command``)."""
    defaults = ServerLimits()
    parser = command_parser("webreplay.server", __doc__)
    parser.add_argument("--corpus-spec", action="append", required=True, type=Path, help="JSON list of (corpus, site)")
    parser.add_argument("--control", required=True, type=Path, help="Unix socket path of the control channel")
    parser.add_argument("--cert", type=Path, help="PEM certificate of the TLS listeners")
    parser.add_argument("--key", type=Path, help="PEM private key of the TLS listeners")
    parser.add_argument("--listen", action="append", default=[], help="plain HTTP listener IP:PORT (repeatable)")
    parser.add_argument("--listen-tls", action="append", default=[], help="HTTPS listener IP:PORT (repeatable)")
    parser.add_argument("--active", help="site active at start (default: the first of the spec)")
    parser.add_argument("--max-header-bytes", type=int, default=defaults.max_header_bytes)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout_s)
    parser.add_argument("--request-timeout", type=float, default=defaults.request_timeout_s)
    parser.add_argument("--handshake-timeout", type=float, default=defaults.handshake_timeout_s)
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections)
    parser.add_argument("--max-log-entries", type=int, default=defaults.max_log_entries)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--mptcp", action="store_true", help="listen on MPTCP sockets (TCP clients fall back)")
    parser.add_argument("--tls-max", choices=TLS_VERSIONS, default=None, help="highest TLS version offered")
    return parser.parse_args(argv)


def _build(args: argparse.Namespace, load_site: Callable[[str, str], Site]) -> ReplayServer:
    limits = ServerLimits(
        max_header_bytes=args.max_header_bytes,
        max_body_bytes=args.max_body_bytes,
        idle_timeout_s=args.idle_timeout,
        request_timeout_s=args.request_timeout,
        handshake_timeout_s=args.handshake_timeout,
        max_connections=args.max_connections,
        max_log_entries=args.max_log_entries,
    )
    listeners = [parse_listen(t, tls=False) for t in args.listen] + [parse_listen(t, tls=True) for t in args.listen_tls]
    if not listeners:
        listeners = [Listener("0.0.0.0", 80), Listener("0.0.0.0", 443, tls=True)]
    context = None
    if args.cert is not None or args.key is not None:
        if args.cert is None or args.key is None:
            raise ReplayConfigError("--cert and --key go together")
        context = server_ssl_context(args.cert, args.key, args.tls_max)
    pairs: list[tuple[str, str]] = []
    for spec in args.corpus_spec:
        try:
            text = spec.read_text()
        except OSError as err:
            raise ReplayConfigError(f"--corpus-spec {str(spec)!r}: {err}") from None
        pairs += parse_corpus_spec(text, where=str(spec))
    sites = [load_site(corpus, name) for corpus, name in pairs]
    return ReplayServer(
        sites,
        listeners,
        control_path=args.control,
        ssl_context=context,
        limits=limits,
        active=args.active,
        mptcp=args.mptcp,
    )


async def _serve(server: ReplayServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    try:
        sys.stdout.write(f"READY {json.dumps(server.ready_info())}\n")
        sys.stdout.flush()
        await stop.wait()
        log.info("stopping")
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None, load_site: Callable[[str, str], Site] | None = None) -> int:
    """Load the sites, serve until SIGTERM/SIGINT; 0 on a clean stop, 1 on a start-up error."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s webreplay.server %(levelname)s %(message)s")
    if load_site is None:
        from webreplay.corpus import load_site as corpus_load_site  # type: ignore[import-not-found,unused-ignore]

        load_site = corpus_load_site
    try:
        server = _build(args, load_site)
        asyncio.run(_serve(server))
    except (ValueError, OSError) as err:  # ReplayConfigError, CorpusError, bind failures
        print(f"webreplay.server: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
