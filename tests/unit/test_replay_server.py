"""The origin replay server on loopback: real sockets, real curl and wget, the local CA, h11 clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from topologies.shell import run
from webreplay.model import RecordedExchange, Site
from webreplay.server import (
    ExchangeIndex,
    Listener,
    ReplayConfigError,
    ReplayControlError,
    ReplayServer,
    ReplayState,
    ServerLimits,
    control_request,
    corpus_spec_text,
    parse_args,
    parse_corpus_spec,
    parse_listen,
    replay_server_command,
    request_authority,
    server_ssl_context,
)
from webreplay.tlsca import CaPaths, CertificateError, ServerCertPaths, issue_server_cert, make_ca

HOST = "www.example.test"
# Not topologies.links.PROJECT_ROOT: importing Mininet replaces the logger class of later loggers.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def exchange(
    target: str,
    body: bytes,
    *,
    host: str = HOST,
    scheme: str = "http",
    method: str = "GET",
    status: int = 200,
    reason: str = "OK",
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "text/plain"),),
) -> RecordedExchange:
    port = 443 if scheme == "https" else 80
    return RecordedExchange(scheme, host, port, method, target, status, reason, headers, body, "text/plain")


ALPHA = Site(
    name="alpha",
    corpus="har",
    source="tests/alpha.har",
    main_url=f"http://{HOST}/",
    exchanges=(
        exchange(
            "/",
            b"alpha home\n",
            headers=(
                ("Content-Type", "text/html"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "999"),
                ("Connection", "close"),
                ("X-Bad", "line\r\nbreak"),
            ),
        ),
        exchange("/", b"alpha secure\n", scheme="https"),
        exchange("/search?q=abc&x=1", b"abc-x1"),
        exchange("/search?q=abd", b"abd"),
        exchange("/plain", b"plain body"),
        exchange("/empty", b"", status=204, reason="No Content"),
        exchange("/h2", b"from h2", reason=""),
        exchange("/submit", b"posted", method="POST"),
        exchange("/wget.txt", b"wget over http\n", host="127.0.0.1"),
        exchange("/wget.txt", b"wget over https\n", host="127.0.0.1", scheme="https"),
    ),
)
BETA = Site(
    name="beta",
    corpus="mahimahi",
    source="tests/beta",
    main_url=f"http://{HOST}/",
    exchanges=(exchange("/", b"beta home\n"),),
)


def fake_load_site(corpus: str, name: str) -> Site:
    """Stands in for webreplay.corpus.load_site in the command-line test."""
    for site in (ALPHA, BETA):
        if (site.corpus, site.name) == (corpus, name):
            return site
    raise KeyError((corpus, name))


# ---------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CaPaths, ServerCertPaths]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder)
    leaf = issue_server_cert(ca, [HOST, "static.example.test"], folder, ip_addresses=["127.0.0.1"])
    return ca, leaf


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder for Unix sockets (sun_path holds 107 bytes; pytest's tmp_path can be longer)."""
    folder = Path(tempfile.mkdtemp(prefix=f"rl-o{os.getpid()}-rs-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ServerThread:
    """Runs a ReplayServer on its own event loop in a thread (the test drives real clients)."""

    def __init__(self, server: ReplayServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as err:
            self.error = err
            self.started.set()
            return
        self.started.set()
        self.loop.run_forever()
        self.loop.close()

    def start(self) -> ServerThread:
        self.thread.start()
        assert self.started.wait(10), "server did not start"
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self.error is None and self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def port(self, tls: bool = False) -> int:
        return next(listener.port for listener in self.server.bound if listener.tls == tls)

    def control(self, **command: Any) -> dict[str, Any]:
        assert self.server.control_path is not None
        return control_request(self.server.control_path, command)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control(cmd="stats")["stats"]
        return stats


StartServer = Callable[..., ServerThread]


@pytest.fixture
def start_server(pki: tuple[CaPaths, ServerCertPaths], short_dir: Path) -> Iterator[StartServer]:
    running: list[ServerThread] = []
    _, leaf = pki

    def start(sites: tuple[Site, ...] = (ALPHA, BETA), limits: ServerLimits | None = None) -> ServerThread:
        server = ReplayServer(
            sites,
            [Listener("127.0.0.1", 0), Listener("127.0.0.1", 0, tls=True)],
            control_path=short_dir / f"ctl{len(running)}",
            ssl_context=server_ssl_context(leaf.cert, leaf.key),
            limits=limits,
        )
        thread = ServerThread(server)
        running.append(thread)
        return thread.start()

    try:
        yield start
    finally:
        for thread in running:
            thread.stop()


def curl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "10", *args], check=check)


def resolve(port: int, host: str = HOST) -> list[str]:
    return ["--resolve", f"{host}:{port}:127.0.0.1"]


class RawClient:
    """A plain socket with an h11 client for reading responses (sending may be raw bytes)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, target: str, *, host: str = HOST, body: bytes = b"") -> bytes:
        headers = [("Host", host)]
        if body:
            headers.append(("Content-Length", str(len(body))))
        data = self.h11.send(h11.Request(method=method, target=target, headers=headers)) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        return data + (self.h11.send(h11.EndOfMessage()) or b"")

    def read_response(self) -> tuple[h11.Response, bytes]:
        response: h11.Response | None = None
        body = b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(self.sock.recv(65536))
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                    self.h11.start_next_cycle()
                return response, body
            else:
                raise AssertionError(f"unexpected event {event!r}")

    def get(self, target: str, method: str = "GET", **kwargs: Any) -> tuple[h11.Response, bytes]:
        self.sock.sendall(self.request(method, target, **kwargs))
        return self.read_response()


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes; return everything it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def header(response: h11.Response, name: bytes) -> list[bytes]:
    return [v for n, v in response.headers if n == name]


# ---------------------------------------------------------------------------------------------
# HTTP behaviour.


def test_keep_alive_and_pipelining_over_one_connection(start_server: StartServer) -> None:
    srv = start_server()
    client = RawClient(srv.port())
    try:
        for target, body in [("/", b"alpha home\n"), ("/plain", b"plain body"), ("/search?q=abd", b"abd")]:
            response, got = client.get(target)
            assert (response.status_code, got) == (200, body)
        # Pipelining: three requests in one write, three answers in order on the same connection.
        burst = b"".join(f"GET {t} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() for t in ["/plain", "/missing", "/"])
        client.sock.sendall(burst)
        answers = []
        for _ in range(3):
            client.h11.send(h11.Request(method="GET", target="/", headers=[("Host", HOST)]))
            client.h11.send(h11.EndOfMessage())
            response, got = client.read_response()
            answers.append((response.status_code, got))
        assert answers[0] == (200, b"plain body")
        assert answers[1][0] == 404
        assert answers[2] == (200, b"alpha home\n")
    finally:
        client.close()
    stats = srv.stats()
    assert stats["connections"]["opened"] == 1
    assert stats["requests"] == 6 and stats["served"] == 5 and stats["misses"] == 1


def test_curl_keeps_the_connection_and_gets_recorded_headers(start_server: StartServer) -> None:
    srv = start_server()
    port = srv.port()
    base = f"http://{HOST}:{port}"
    result = curl(*resolve(port), "-w", "[%{num_connects}]", f"{base}/", f"{base}/plain")
    assert result.stdout == "alpha home\n[1]plain body[0]"
    log = srv.stats()["connection_log"]
    assert len(log) == 1 and log[0]["requests"] == 2 and log[0]["tls"] is False

    head = curl(*resolve(port), "--include", f"{base}/").stdout
    lines = head.splitlines()
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Set-Cookie: a=1" in lines and "Set-Cookie: b=2" in lines
    assert "Content-Length: 11" in lines
    # Recorded framing and hop-by-hop headers are not replayed; a header h11 cannot send is dropped.
    lowered = head.lower()
    assert "transfer-encoding" not in lowered and "connection:" not in lowered and "x-bad" not in lowered
    assert "999" not in head


def test_https_with_the_local_ca(start_server: StartServer, pki: tuple[CaPaths, ServerCertPaths]) -> None:
    ca, _ = pki
    srv = start_server()
    port = srv.port(tls=True)
    result = curl("--cacert", str(ca.cert), *resolve(port), f"https://{HOST}:{port}/", "-w", " %{http_version}")
    assert result.stdout == "alpha secure\n 1.1"  # ALPN offers only http/1.1
    # Not a name of the certificate: verification fails (exit 60), so the SANs are really checked.
    other = curl("--cacert", str(ca.cert), *resolve(port, "other.test"), f"https://other.test:{port}/", check=False)
    assert other.returncode == 60
    # Without the CA, curl does not trust it.
    assert curl(*resolve(port), f"https://{HOST}:{port}/", check=False).returncode == 60
    log = srv.stats()["connection_log"]
    assert [entry["tls"] for entry in log] == [True, True, True]


def test_real_wget_over_http_and_https(
    start_server: StartServer, pki: tuple[CaPaths, ServerCertPaths], tmp_path: Path
) -> None:
    ca, _ = pki
    srv = start_server()
    out = tmp_path / "got"
    wget = ["wget", "--quiet", "-e", "use_proxy=off", "--tries=1", "--timeout=10", "-O", str(out)]
    run([*wget, f"http://127.0.0.1:{srv.port()}/wget.txt"])
    assert out.read_bytes() == b"wget over http\n"
    run([*wget, "--ca-certificate", str(ca.cert), f"https://127.0.0.1:{srv.port(tls=True)}/wget.txt"])
    assert out.read_bytes() == b"wget over https\n"
    stats = srv.stats()
    assert stats["served"] == 2 and stats["misses"] == 0


def test_miss_is_a_404_counted_with_its_url(start_server: StartServer) -> None:
    srv = start_server()
    port = srv.port()
    result = curl(*resolve(port), "-w", "%{http_code}", f"http://{HOST}:{port}/nowhere?x=1", check=False)
    assert result.stdout.endswith("404")
    client = RawClient(port)
    try:
        response, _ = client.get("/", host="unknown.test")
        assert response.status_code == 404 and response.reason == b"Not Found"
    finally:
        client.close()
    stats = srv.stats()
    assert stats["misses"] == 2 and stats["served"] == 0
    urls = [entry["url"] for entry in stats["miss_log"]]
    assert urls == [f"http://{HOST}:{port}/nowhere?x=1", "http://unknown.test/"]
    assert stats["miss_log"][0]["site"] == "alpha"


def test_mahimahi_query_rule_over_http(start_server: StartServer) -> None:
    srv = start_server()
    port = srv.port()
    base = f"http://{HOST}:{port}"
    result = curl(*resolve(port), f"{base}/search?q=abd&y=2", f"{base}/search?q=abc&x=2")
    assert result.stdout == "abdabc-x1"


def test_site_index_exact_then_longest_prefix() -> None:
    index = ExchangeIndex(ALPHA)

    def body(method: str, scheme: str, host: str, target: str) -> bytes | None:
        found = index.lookup(method, scheme, host, target)
        return None if found is None else found.body

    assert body("GET", "http", HOST, "/search?q=abc&x=1") == b"abc-x1"
    assert body("GET", "http", HOST, "/search?q=abd&y=2") == b"abd"  # 13 common characters against 12
    assert body("GET", "http", HOST, "/search?q=abc&x=2") == b"abc-x1"
    assert body("GET", "http", HOST, "/search?q=zzz") == b"abc-x1"  # tie: the first recorded wins
    assert body("GET", "http", HOST, "/search") is None  # no query: exact only (as Mahimahi)
    assert body("GET", "http", HOST, "/plain?v=1") is None  # the recording has no query (as Mahimahi)
    assert body("GET", "https", HOST, "/search?q=abc&x=1") is None  # scheme is part of the key
    assert body("GET", "http", "static.example.test", "/plain") is None
    assert body("HEAD", "http", HOST, "/plain") == b"plain body"
    assert body("POST", "http", HOST, "/plain") is None
    assert body("post", "http", HOST, "/submit") == b"posted"


def test_request_authority_forms() -> None:
    assert request_authority(b"WWW.Example.Test:8080", b"/a?b") == ("www.example.test", "/a?b", "www.example.test:8080")
    assert request_authority(b"example.test.", b"/") == ("example.test", "/", "example.test.")
    assert request_authority(b"[::1]:80", b"/") == ("::1", "/", "[::1]:80")
    assert request_authority(b"ignored", b"http://Other.Test:81/x?y") == ("other.test", "/x?y", "other.test:81")
    assert request_authority(None, b"https://a.test") == ("a.test", "/", "a.test")


def test_head_sends_headers_and_length_without_body(start_server: StartServer) -> None:
    srv = start_server()
    client = RawClient(srv.port())
    try:
        response, body = client.get("/plain", method="HEAD")
        assert response.status_code == 200 and body == b""
        assert header(response, b"content-length") == [b"10"]
        response, body = client.get("/plain")  # the connection is still in step
        assert body == b"plain body"
        response, body = client.get("/nowhere", method="HEAD")  # a miss answers HEAD without a body
        assert (response.status_code, body) == (404, b"")
        assert client.get("/plain")[1] == b"plain body"
    finally:
        client.close()
    port = srv.port()
    head = curl(*resolve(port), "--head", f"http://{HOST}:{port}/").stdout
    assert "Content-Length: 11" in head.splitlines()
    stats = srv.stats()
    assert stats["served"] == 4 and stats["body_bytes"] == 2 * len(b"plain body")
    assert stats["misses"] == 1 and stats["miss_log"][0]["method"] == "HEAD"


def test_bodyless_statuses_and_missing_reasons(start_server: StartServer) -> None:
    srv = start_server()
    client = RawClient(srv.port())
    try:
        response, body = client.get("/empty")
        assert (response.status_code, body, header(response, b"content-length")) == (204, b"", [])
        response, body = client.get("/h2")
        assert (response.reason, body) == (b"OK", b"from h2")  # empty recorded reason: standard phrase
    finally:
        client.close()


def test_active_site_switching(start_server: StartServer) -> None:
    srv = start_server()
    port = srv.port()
    url = f"http://{HOST}:{port}/"
    assert srv.control(cmd="ping")["active"] == {"corpus": "har", "site": "alpha"}
    assert curl(*resolve(port), url).stdout == "alpha home\n"
    assert srv.control(cmd="activate", site="beta")["active"] == {"corpus": "mahimahi", "site": "beta"}
    assert curl(*resolve(port), url).stdout == "beta home\n"
    assert curl(*resolve(port), "-w", "%{http_code}", f"{url}plain", check=False).stdout.endswith("404")
    assert srv.stats()["miss_log"][0]["site"] == "beta"
    with pytest.raises(ReplayControlError, match=r"site='gamma'.*unknown.*har/alpha"):
        srv.control(cmd="activate", site="gamma")
    with pytest.raises(ReplayControlError, match="corpus='har'"):
        srv.control(cmd="activate", site="beta", corpus="har")
    assert srv.control(cmd="activate", site="alpha", corpus="har")["active"]["site"] == "alpha"
    assert curl(*resolve(port), url).stdout == "alpha home\n"


def test_same_site_name_in_two_corpora_needs_the_corpus() -> None:
    twin = Site("alpha", "mahimahi", "x", ALPHA.main_url, BETA.exchanges)
    state = ReplayState([ALPHA, twin], ServerLimits())
    answer = state.control({"cmd": "activate", "site": "alpha"})
    assert answer["ok"] is False and "several corpora" in answer["error"]
    assert state.control({"cmd": "activate", "site": "alpha", "corpus": "mahimahi"})["ok"] is True
    assert state.active.site is twin
    with pytest.raises(ReplayConfigError, match="har/alpha given twice"):
        ReplayState([ALPHA, ALPHA], ServerLimits())
    with pytest.raises(ReplayConfigError, match="sites: empty"):
        ReplayState([], ServerLimits())


def test_control_protocol_errors_and_line_framing(start_server: StartServer) -> None:
    srv = start_server()
    assert srv.server.control_path is not None
    assert stat.S_IMODE(srv.server.control_path.stat().st_mode) == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(srv.server.control_path))
        sock.sendall(b'not json\n{"cmd": "nope"}\n[1]\n{"cmd": "activate"}\n\n{"cmd": "ping"}\n')
        data = b""
        while data.count(b"\n") < 5:
            data += sock.recv(65536)
    answers = [json.loads(line) for line in data.splitlines()]
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert "not JSON" in answers[0]["error"]
    assert "cmd='nope'" in answers[1]["error"]
    assert '"cmd"' in answers[2]["error"]
    assert "site=None" in answers[3]["error"]
    assert answers[4]["pid"] == os.getpid()


def test_stats_and_reset(start_server: StartServer) -> None:
    srv = start_server()
    port = srv.port()
    curl(*resolve(port), f"http://{HOST}:{port}/", f"http://{HOST}:{port}/gone", check=False)
    before = srv.stats()
    assert (before["requests"], before["served"], before["misses"]) == (2, 1, 1)
    assert before["body_bytes"] == len(b"alpha home\n") and before["wire_bytes"] > before["body_bytes"]
    entry = before["connection_log"][0]
    assert entry["open_ns"] <= entry["close_ns"] <= before["now_ns"]
    assert entry["peer"].startswith("127.0.0.1:") and entry["local"] == f"127.0.0.1:{port}"
    assert entry["close_reason"] == "peer closed"

    client = RawClient(port)  # open across the reset: stays listed, with zeroed counts
    try:
        client.get("/")
        assert srv.control(cmd="reset") == {"ok": True}
        after = srv.stats()
        assert (after["requests"], after["served"], after["misses"], after["wire_bytes"]) == (0, 0, 0, 0)
        assert after["miss_log"] == [] and after["connections"]["opened"] == 0
        assert after["since_ns"] > before["now_ns"]
        assert [(e["requests"], e["close_ns"]) for e in after["connection_log"]] == [(0, None)]
        client.get("/plain")
    finally:
        client.close()
    assert srv.stats()["served"] == 1


def test_malformed_request_gets_400_closes_and_is_logged(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    srv = start_server()
    with caplog.at_level("WARNING", logger="webreplay.server"):
        answer = raw_exchange(srv.port(), b"GARBAGE\r\n\r\n")
        no_host = raw_exchange(srv.port(), b"GET / HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"connection: close" in answer.lower()
    assert no_host.startswith(b"HTTP/1.1 400 ")
    assert any("bad request" in r.getMessage() and "request line" in r.getMessage() for r in caplog.records)
    assert any("Host" in r.getMessage() for r in caplog.records)
    stats = srv.stats()
    assert stats["bad_requests"] == 2
    assert [e["status"] for e in stats["error_log"]] == [400, 400]
    assert all(e["close_reason"].startswith("error 400") for e in stats["connection_log"])


def test_oversized_request_head_is_rejected(start_server: StartServer) -> None:
    srv = start_server(limits=ServerLimits(max_header_bytes=1024))
    big = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Fill: {'a' * 4000}\r\n\r\n".encode()
    assert raw_exchange(srv.port(), big).startswith(b"HTTP/1.1 431 ")  # arrives whole: explicit check
    head = raw_exchange(srv.port(), b"HEAD" + big[3:])
    assert head.startswith(b"HTTP/1.1 431 ") and head.endswith(b"\r\n\r\n")  # no body for HEAD
    with socket.create_connection(("127.0.0.1", srv.port()), timeout=5) as sock:  # never ends: h11's limit
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Fill: ".encode() + b"b" * 3000)
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")
    # A head under the limit is still fine.
    client = RawClient(srv.port())
    try:
        assert client.get("/plain")[1] == b"plain body"
    finally:
        client.close()
    assert [e["status"] for e in srv.stats()["error_log"]] == [431, 431, 431]


def test_request_bodies_are_discarded_up_to_the_limit(start_server: StartServer) -> None:
    srv = start_server(limits=ServerLimits(max_body_bytes=4096))
    client = RawClient(srv.port())
    try:
        response, body = client.get("/submit", method="POST", body=b"x" * 4000)
        assert (response.status_code, body) == (200, b"posted")
        assert client.get("/plain")[1] == b"plain body"  # the body was consumed: still in step
    finally:
        client.close()
    too_big = f"POST /submit HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5000\r\n\r\n".encode() + b"y" * 5000
    assert raw_exchange(srv.port(), too_big).startswith(b"HTTP/1.1 413 ")
    chunked = f"POST /submit HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunked += b"".join(b"800\r\n" + b"z" * 0x800 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    assert raw_exchange(srv.port(), chunked).startswith(b"HTTP/1.1 413 ")
    # curl's Expect: 100-continue (bodies over 1 MiB in curl 7.88) gets its 100 and then the answer.
    port = srv.port()
    result = curl(
        *resolve(port), "-H", "Expect: 100-continue", "--data-binary", "q" * 3000, f"http://{HOST}:{port}/submit"
    )
    assert result.stdout == "posted"


def test_idle_connections_are_closed(start_server: StartServer) -> None:
    srv = start_server(limits=ServerLimits(idle_timeout_s=0.3))
    with socket.create_connection(("127.0.0.1", srv.port()), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert 0.25 <= time.monotonic() - started < 3
    stats = srv.stats()
    assert stats["connections"]["idle_timeouts"] == 1
    assert stats["connection_log"][0]["close_reason"] == "idle timeout"


def test_connection_cap_rejects_extra_connections(start_server: StartServer) -> None:
    srv = start_server(limits=ServerLimits(max_connections=2))
    clients = [RawClient(srv.port()) for _ in range(2)]
    try:
        for client in clients:
            assert client.get("/plain")[1] == b"plain body"  # both accepted and open
        with (
            socket.create_connection(("127.0.0.1", srv.port()), timeout=5) as extra,
            contextlib.suppress(ConnectionResetError),  # reset at once, or closed
        ):
            assert extra.recv(100) == b""
        stats = srv.stats()
        assert stats["connections"]["rejected"] == 1 and stats["connections"]["open"] == 2
        assert clients[0].get("/")[1] == b"alpha home\n"
    finally:
        for client in clients:
            client.close()


def test_failed_tls_handshake_is_counted_and_harmless(start_server: StartServer) -> None:
    srv = start_server()
    port = srv.port(tls=True)
    answer = raw_exchange(port, f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    assert not answer.startswith(b"HTTP/")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"alpha secure\n")
    stats = srv.stats()
    assert stats["connections"]["tls_failures"] == 1
    assert stats["connection_log"][0]["close_reason"].startswith("TLS handshake failed")
    assert stats["connection_log"][1]["close_reason"].startswith("server closed")


def test_stop_ends_open_connections_and_removes_the_control_socket(start_server: StartServer) -> None:
    srv = start_server()
    client = RawClient(srv.port())
    try:
        client.get("/")
        srv.stop()
        assert client.sock.recv(100) == b""
    finally:
        client.close()
    assert srv.server.control_path is not None and not srv.server.control_path.exists()


# ---------------------------------------------------------------------------------------------
# Configuration and command line.


def test_listener_and_limit_validation() -> None:
    with pytest.raises(ReplayConfigError, match=r"listener ip='localhost'"):
        Listener("localhost", 80)
    with pytest.raises(ReplayConfigError, match=r"listener port=70000"):
        Listener("0.0.0.0", 70000)
    with pytest.raises(ReplayConfigError, match=r"max_connections=0"):
        ServerLimits(max_connections=0)
    with pytest.raises(ReplayConfigError, match=r"idle_timeout_s=-1"):
        ServerLimits(idle_timeout_s=-1)
    with pytest.raises(ReplayConfigError, match=r"max_header_bytes=True"):
        ServerLimits(max_header_bytes=True)
    assert parse_listen("[::]:443", tls=True) == Listener("::", 443, True)
    assert parse_listen("0.0.0.0:80", tls=False) == Listener("0.0.0.0", 80)
    with pytest.raises(ReplayConfigError, match=r"listen='0.0.0.0'"):
        parse_listen("0.0.0.0", tls=False)
    with pytest.raises(ReplayConfigError, match="is TLS but no certificate"):
        ReplayServer([ALPHA], [Listener("127.0.0.1", 0, tls=True)])


def test_control_path_checks(short_dir: Path) -> None:
    long_path = short_dir / ("x" * 120)
    server = ReplayServer([ALPHA], [Listener("127.0.0.1", 0)], control_path=long_path)
    with pytest.raises(ReplayConfigError, match="longer than 107 bytes"):
        asyncio.run(server.start())
    assert server._servers == []  # what had started was stopped again
    regular = short_dir / "file"
    regular.write_text("")
    with pytest.raises(ReplayConfigError, match="not a socket"):
        asyncio.run(ReplayServer([ALPHA], [Listener("127.0.0.1", 0)], control_path=regular).start())


def test_control_path_in_use_is_refused_and_stale_socket_replaced(start_server: StartServer) -> None:
    srv = start_server()
    path = srv.server.control_path
    assert path is not None
    with pytest.raises(ReplayConfigError, match="another server is listening"):
        asyncio.run(ReplayServer([ALPHA], [Listener("127.0.0.1", 0)], control_path=path).start())
    stale = path.with_name("stale")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))  # bound, never listening: a leftover
    second = ServerThread(ReplayServer([ALPHA], [Listener("127.0.0.1", 0)], control_path=stale)).start()
    try:
        assert second.control(cmd="ping")["ok"] is True
    finally:
        second.stop()


def test_corpus_spec_parsing() -> None:
    pairs = [("har", "alpha"), ("mahimahi", "beta")]
    assert parse_corpus_spec(corpus_spec_text(pairs)) == pairs
    assert parse_corpus_spec('[["har", "x"]]') == [("har", "x")]
    with pytest.raises(ReplayConfigError, match="not JSON"):
        parse_corpus_spec("{")
    with pytest.raises(ReplayConfigError, match="non-empty JSON list"):
        parse_corpus_spec("[]")
    with pytest.raises(ReplayConfigError, match=r"spec.json\[1\]=\{'corpus': 'har'\}"):
        parse_corpus_spec('[["har", "x"], {"corpus": "har"}]', where="spec.json")
    with pytest.raises(ReplayConfigError, match="non-empty strings"):
        parse_corpus_spec('[["har", ""]]')


def test_command_line_round_trip(tmp_path: Path) -> None:
    limits = ServerLimits(max_header_bytes=8192, idle_timeout_s=2.5, max_connections=10)
    argv = replay_server_command(
        tmp_path / "spec.json",
        tmp_path / "ctl",
        cert="c.pem",
        key="k.pem",
        listeners=[Listener("0.0.0.0", 80), Listener("::", 443, tls=True)],
        limits=limits,
        active="beta",
    )
    assert argv[:3] == [sys.executable, "-m", "webreplay.server"]
    args = parse_args(argv[3:])
    assert args.listen == ["0.0.0.0:80"] and args.listen_tls == ["[::]:443"]
    assert (args.max_header_bytes, args.idle_timeout, args.max_connections) == (8192, 2.5, 10)
    assert (args.cert, args.key, args.active) == (Path("c.pem"), Path("k.pem"), "beta")
    with pytest.raises(ReplayConfigError, match="TLS listener needs both"):
        replay_server_command("s", "c", cert=None, key=None)


def test_process_prints_ready_serves_and_stops_on_sigterm(
    pki: tuple[CaPaths, ServerCertPaths], short_dir: Path
) -> None:
    _, leaf = pki
    spec = short_dir / "spec.json"
    spec.write_text(corpus_spec_text([("har", "alpha"), ("mahimahi", "beta")]))
    control = short_dir / "ctl"
    argv = replay_server_command(
        spec,
        control,
        cert=leaf.cert,
        key=leaf.key,
        listeners=[Listener("127.0.0.1", 0), Listener("127.0.0.1", 0, tls=True)],
        active="beta",
    )
    # The real entry point, with the corpus loader replaced (webreplay.corpus is not needed here).
    code = (
        "import sys; from webreplay import server; from tests.unit.test_replay_server import fake_load_site; "
        "sys.exit(server.main(sys.argv[1:], load_site=fake_load_site))"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", code, *argv[3:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("READY "), proc.stderr.read() if proc.stderr else ""
            ready = json.loads(line.split(" ", 1)[1])
            assert ready["pid"] == proc.pid and ready["control"] == str(control)
            assert ready["active"] == {"corpus": "mahimahi", "site": "beta"}
            assert [s["site"] for s in ready["sites"]] == ["alpha", "beta"]
            ports = {listener["tls"]: listener["port"] for listener in ready["listeners"]}
            assert curl(*resolve(ports[False]), f"http://{HOST}:{ports[False]}/").stdout == "beta home\n"
            assert control_request(control, {"cmd": "ping"})["pid"] == proc.pid
            keep = RawClient(ports[False])  # an open keep-alive connection must not block the stop
            keep.get("/")
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
            keep.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "stopping" in stderr
    assert not control.exists()


def test_process_reports_start_up_errors(short_dir: Path) -> None:
    spec = short_dir / "spec.json"
    spec.write_text("[]")
    argv = [sys.executable, "-m", "webreplay.server", "--corpus-spec", str(spec), "--control", str(short_dir / "c")]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=short_dir, timeout=30, check=False)
    assert proc.returncode == 1 and "non-empty JSON list" in proc.stderr


# ---------------------------------------------------------------------------------------------
# The local CA.


def test_ca_is_created_once_and_reused(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    assert stat.S_IMODE(ca.key.stat().st_mode) == 0o600
    key, cert = ca.key.read_bytes(), ca.cert.read_bytes()
    assert make_ca(tmp_path) == ca
    assert (ca.key.read_bytes(), ca.cert.read_bytes()) == (key, cert)
    parsed = x509.load_pem_x509_certificate(cert)
    assert parsed.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    lifetime = parsed.not_valid_after_utc - parsed.not_valid_before_utc
    assert 3650 <= lifetime.days <= 3651
    ca.cert.write_text("garbage")  # unusable: replaced
    make_ca(tmp_path)
    assert ca.key.read_bytes() != key
    x509.load_pem_x509_certificate(ca.cert.read_bytes())


def test_keys_are_never_written_through_a_planted_link(tmp_path: Path) -> None:
    # Someone sharing the folder plants links at every name the old code would have used.
    folder = tmp_path / "ca"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("do not touch\n")
    for name in ("ca.key", "ca.pem"):
        (folder / f".{name}.{os.getpid()}.tmp").symlink_to(victim)
    ca = make_ca(folder)
    assert victim.read_text() == "do not touch\n"
    assert not ca.key.is_symlink() and stat.S_IMODE(ca.key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in ca.key.read_bytes()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]  # none left
    assert stat.S_IMODE(make_ca(tmp_path / "new").key.parent.stat().st_mode) == 0o700


def test_leaf_certificate_covers_many_names(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    names = [f"host{i}.example{i % 7}.test" for i in range(200)] + ["Host0.Example0.test", "*.cdn.test"]
    leaf = issue_server_cert(ca, names, tmp_path / "leaf", ip_addresses=["198.19.0.1", "::1"])
    assert stat.S_IMODE(leaf.key.stat().st_mode) == 0o600
    assert len(leaf.hostnames) == 201  # the upper-case duplicate folded
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(san.get_values_for_type(x509.DNSName)) == 201
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["198.19.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    verified = run(["openssl", "verify", "-CAfile", str(ca.cert), "-purpose", "sslserver", str(leaf.cert)])
    assert verified.stdout.strip().endswith(": OK")


def test_certificate_input_errors(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    with pytest.raises(CertificateError, match=r"hostname='bad name'"):
        issue_server_cert(ca, ["bad name"], tmp_path)
    with pytest.raises(CertificateError, match=r"hostname='10.0.0.1'.*ip_addresses"):
        issue_server_cert(ca, ["10.0.0.1"], tmp_path)
    with pytest.raises(CertificateError, match=r"ip_addresses: 'nope'"):
        issue_server_cert(ca, ["a.test"], tmp_path, ip_addresses=["nope"])
    with pytest.raises(CertificateError, match="cover nothing"):
        issue_server_cert(ca, [], tmp_path)
    with pytest.raises(CertificateError, match=r"name='../x'"):
        issue_server_cert(ca, ["a.test"], tmp_path, name="../x")


def test_dripping_requests_are_cut_off_and_never_lock_out_others(start_server: StartServer) -> None:
    srv = start_server(limits=ServerLimits(max_connections=5, request_timeout_s=0.5, idle_timeout_s=5))
    head = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Pad: {'a' * 200}\r\n\r\n".encode()
    drips = [socket.create_connection(("127.0.0.1", srv.port()), timeout=5) for _ in range(5)]
    stop = threading.Event()

    def drip(sock: socket.socket) -> None:
        for byte in head:  # one byte every 50 ms: each read well inside the idle timeout
            if stop.wait(0.05):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    threads = [threading.Thread(target=drip, args=(sock,), daemon=True) for sock in drips]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.2)  # past the request deadline of every dripping connection
        client = RawClient(srv.port())
        try:
            assert client.get("/")[1] == b"alpha home\n"
        finally:
            client.close()
        answers = []
        for sock in drips:
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                answers.append(sock.recv(200))
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers) and len(answers) == 5, answers
        stats = srv.stats()
        assert stats["connections"]["request_timeouts"] == 5 and stats["connections"]["rejected"] == 0
    finally:
        stop.set()
        for sock in drips:
            sock.close()


def test_bad_bytes_and_deep_json_on_the_control_socket_get_an_answer(start_server: StartServer) -> None:
    srv = start_server()
    assert srv.server.control_path is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(srv.server.control_path))
        sock.sendall(b'{"cmd": "\xff"}\n' + b"[" * 50_000 + b"\n" + b'{"cmd": "ping"}\n')
        data = b""
        while data.count(b"\n") < 3:
            chunk = sock.recv(65536)
            assert chunk, f"control socket closed after {data!r}"
            data += chunk
    answers = [json.loads(line) for line in data.splitlines()]
    assert [a["ok"] for a in answers] == [False, False, True]
    assert "not UTF-8" in answers[0]["error"] and "nested too deeply" in answers[1]["error"]


# ---------------------------------------------------------------------------------------------
# What a browser asks for beyond wget: its own requests, HSTS upgrades, CORS and timing headers.


def test_browser_requests_and_hsts_upgrades_are_counted_apart_from_misses(start_server: StartServer) -> None:
    srv = start_server()
    client = RawClient(srv.port())
    try:
        favicon, _ = client.get("/favicon.ico")
        assert favicon.status_code == 404
        miss, _ = client.get("/favicon.ico.png")
        assert miss.status_code == 404
    finally:
        client.close()
    port = srv.port(tls=True)
    # /plain is recorded over http only: a browser's HSTS upgrade gets the recorded answer over TLS.
    upgraded = curl("--insecure", *resolve(port), f"https://{HOST}:{port}/plain")
    assert upgraded.stdout == "plain body"
    stats = srv.stats()
    assert stats["browser_requests"] == 1 and stats["misses"] == 1 and stats["hsts_upgrades"] == 1
    assert [e["url"] for e in stats["browser_log"]] == [f"http://{HOST}/favicon.ico"]
    assert stats["served"] == 1 and stats["served_urls"] == {f"http://{HOST}/plain": 1}
    kinds = [(r["target"], r["kind"], r["host"]) for c in stats["connection_log"] for r in c["request_log"]]
    assert kinds == [
        ("/favicon.ico", "browser", HOST),
        ("/favicon.ico.png", "miss", HOST),
        ("/plain", "upgraded", HOST),
    ]


def test_recorded_cors_and_timing_headers_are_replayed(
    start_server: StartServer, pki: tuple[CaPaths, ServerCertPaths]
) -> None:
    from webreplay.corpus import load_site
    from webreplay.pagebuild import RecordedObject, kept_exchange

    google = load_site("har", "google.com")
    font = next(e for e in google.exchanges if e.content_type == "font/woff2")
    # A generated body (no recorded one) keeps the recorded CORS and timing headers too.
    cors = (("Access-Control-Allow-Origin", "https://page.test"), ("Access-Control-Allow-Credentials", "true"),
            ("Timing-Allow-Origin", "*"), ("Content-Type", "application/font-woff"))  # fmt: skip
    generated = kept_exchange(RecordedObject(url=f"https://{HOST}/f.woff", method="GET", status=200, reason="OK",
                                             headers=cors, body=None, size=300,
                                             content_type="application/font-woff"), "test")  # fmt: skip
    site = Site("fonts", "har", "test", f"https://{HOST}/", (font, generated))
    ca, _ = pki
    srv = start_server((site,))
    port = srv.port(tls=True)
    # (the font's certificate name is not in the test PKI: the headers are what this is about)
    head = curl("--insecure", *resolve(port, font.host), "--head", f"https://{font.host}:{port}{font.target}").stdout
    lines = head.split("\r\n\r\n", 1)[0].splitlines()
    assert "access-control-allow-origin: *" in [x.lower() for x in lines]
    assert "timing-allow-origin: *" in [x.lower() for x in lines]
    head = curl("--cacert", str(ca.cert), *resolve(port), "--head", f"https://{HOST}:{port}/f.woff").stdout
    lines = head.split("\r\n\r\n", 1)[0].splitlines()
    for name, value in cors:
        assert f"{name}: {value}" in lines, lines
    assert generated.synthesized and "Content-Length: 300" in lines
