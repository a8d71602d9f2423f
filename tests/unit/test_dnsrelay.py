"""The client's DNS stub: message handling, and both modes over loopback UDP."""

import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from webreplay.dnsrelay import DnsError, local_answer, parse_query, read_hosts, read_lookups, rewrite_id


def _query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def test_query_parsing_and_answers_from_the_hosts_table():
    query = _query("WWW.Example.org")
    parsed = parse_query(query)
    assert (parsed.ident, parsed.name, parsed.qtype, parsed.question_end) == (0x1234, "www.example.org", 1, len(query))
    answer, rcode = local_answer(query, parsed, {"www.example.org": "198.19.0.7"})
    assert rcode == 0 and answer[:2] == query[:2] and answer.endswith(socket.inet_aton("198.19.0.7"))
    assert struct.unpack_from("!HHHH", answer, 2) == (0x8180, 1, 1, 0)
    nodata, rcode = local_answer(_query("www.example.org", 28), parse_query(_query("www.example.org", 28)),
                                 {"www.example.org": "198.19.0.7"})  # fmt: skip
    assert rcode == 0 and struct.unpack_from("!H", nodata, 6)[0] == 0
    _, rcode = local_answer(_query("nope.example"), parse_query(_query("nope.example")), {})
    assert rcode == 3
    assert rewrite_id(query, 7)[:2] == b"\x00\x07" and rewrite_id(query, 7)[2:] == query[2:]
    for bad in (b"short", query[:12] + b"\x05ab", struct.pack("!HHHHHH", 1, 0, 0, 0, 0, 0)):
        with pytest.raises(DnsError):
            parse_query(bad)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ask(port: int, query: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, ("127.0.0.1", port))
        return sock.recv(512)


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    port = _free_udp_port()
    proc = subprocess.Popen([sys.executable, "-m", "webreplay.dnsrelay", "--port", str(port), "--log",
                             str(tmp_path / "dns.log"), *extra], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().startswith("READY")
    return proc, port


def test_cache_mode_answers_locally_and_logs_every_lookup(tmp_path):
    (tmp_path / "hosts").write_text("198.19.0.1 a.example.org\n198.19.0.2 b.example.org\n")
    assert read_hosts(tmp_path / "hosts") == {"a.example.org": "198.19.0.1", "b.example.org": "198.19.0.2"}
    proc, port = _start(tmp_path, "--upstream", "127.0.0.1", "--upstream-port", "9", "--cache", str(tmp_path / "hosts"))
    try:
        answer = _ask(port, _query("b.example.org", ident=99))
        assert answer[:2] == b"\x00\x63" and answer.endswith(socket.inet_aton("198.19.0.2"))
    finally:
        proc.terminate()
        proc.wait(5)
    lookup = read_lookups(tmp_path / "dns.log", 0)[0][0]
    assert lookup.name == "b.example.org" and lookup.cached is True and lookup.answer_ns >= lookup.t_ns


def test_forward_mode_relays_to_the_upstream_server_and_back(tmp_path):
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))
    upstream.settimeout(5)
    proc, port = _start(tmp_path, "--upstream", "127.0.0.1", "--upstream-port", str(upstream.getsockname()[1]))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(_query("c.example.org", ident=0x4242), ("127.0.0.1", port))
            relayed, relay_addr = upstream.recvfrom(512)
            assert relayed[2:] == _query("c.example.org")[2:]  # the same query, its own ID
            time.sleep(0.01)
            upstream.sendto(relayed[:2] + b"\x81\x80" + relayed[4:], relay_addr)
            answer = client.recv(512)
            assert answer[:2] == b"\x42\x42" and answer[2:4] == b"\x81\x80"
    finally:
        proc.terminate()
        proc.wait(5)
        upstream.close()
    lookup = read_lookups(tmp_path / "dns.log", 0)[0][0]
    assert lookup.cached is False and lookup.answer_ns - lookup.t_ns >= 10_000_000 and lookup.rcode == 0
