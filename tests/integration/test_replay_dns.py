"""DNS of the emulated internet: the pure builders, and a real dnsmasq in a scratch network namespace."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from topologies.shell import run
from webreplay.dns import (
    DnsConfigError,
    dnsmasq_command,
    hosts_file_text,
    resolv_conf_text,
    with_resolver,
)
from webreplay.model import origin_addresses

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DNS_ADDRESS = "198.18.0.53"

# ---------------------------------------------------------------------------------------------
# Builders (no root).


def test_hosts_file_lists_every_origin_sorted_and_lower_case() -> None:
    addresses = origin_addresses(["b.example.test", "A.Example.Test", "cdn_x.example.test"])
    text = hosts_file_text(addresses)
    assert text == "198.19.0.1 a.example.test\n198.19.0.2 b.example.test\n198.19.0.3 cdn_x.example.test\n"
    assert hosts_file_text({}) == ""


@pytest.mark.parametrize(
    ("addresses", "needle"),
    [
        ({"bad name": "198.19.0.1"}, "host name 'bad name'"),
        ({"-x.test": "198.19.0.1"}, "host name '-x.test'"),
        ({"1.2.3.4": "198.19.0.1"}, "IP literal"),
        ({"a.test": "nope"}, "addresses['a.test']='nope'"),
        ({"a.test": "198.19.0.1", "A.test": "198.19.0.2"}, "two addresses"),
    ],
)
def test_hosts_file_rejects_bad_entries(addresses: dict[str, str], needle: str) -> None:
    with pytest.raises(DnsConfigError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        hosts_file_text(addresses)


def test_dnsmasq_command_answers_only_from_the_hosts_file() -> None:
    argv = dnsmasq_command("198.18.0.53", "/x/hosts", "/x/pid", "/x/log")
    assert argv[0] == "dnsmasq"
    for flag in (
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--local=/#/",
        "--addn-hosts=/x/hosts",
        "--listen-address=198.18.0.53",
        "--bind-interfaces",
        "--port=53",
        "--pid-file=/x/pid",
        "--log-facility=/x/log",
        "--user=root",
        "--log-queries",
    ):
        assert flag in argv
    assert not [a for a in argv if a.startswith(("--dhcp", "--server", "--interface", "--resolv-file"))]
    quiet = dnsmasq_command("::1", "h", "p", "l", port=5353, local_ttl=30, log_queries=False)
    assert "--listen-address=::1" in quiet and "--port=5353" in quiet and "--local-ttl=30" in quiet
    assert "--log-queries" not in quiet
    with pytest.raises(DnsConfigError, match=r"listen_address='0\.0\.0\.0\.0'"):
        dnsmasq_command("0.0.0.0.0", "h", "p", "l")
    with pytest.raises(DnsConfigError, match="port=0"):
        dnsmasq_command("198.18.0.53", "h", "p", "l", port=0)
    with pytest.raises(DnsConfigError, match="local_ttl=-1"):
        dnsmasq_command("198.18.0.53", "h", "p", "l", local_ttl=-1)


def test_resolv_conf_text() -> None:
    assert resolv_conf_text("198.18.0.53") == "nameserver 198.18.0.53\noptions timeout:5 attempts:2\n"
    assert resolv_conf_text("198.18.0.53", timeout_s=1, attempts=3).endswith("options timeout:1 attempts:3\n")
    with pytest.raises(DnsConfigError, match="server='dns'"):
        resolv_conf_text("dns")
    with pytest.raises(DnsConfigError, match="port=5353"):
        resolv_conf_text("198.18.0.53", port=5353)
    with pytest.raises(DnsConfigError, match="timeout_s=0"):
        resolv_conf_text("198.18.0.53", timeout_s=0)


def test_with_resolver_keeps_argv_out_of_the_script() -> None:
    argv = with_resolver("/run/rl/resolv.conf", ["wget", "-q", "http://a.test/?x=$(y)"])
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert argv[5:7] == ["sh", "-c"] and "/etc/resolv.conf" in argv[7]  # argv[7]: the script text
    assert argv[8:] == ["with_resolver", "/run/rl/resolv.conf", "wget", "-q", "http://a.test/?x=$(y)"]
    with pytest.raises(DnsConfigError, match="must be absolute"):
        with_resolver("resolv.conf", ["true"])
    with pytest.raises(DnsConfigError, match="argv: empty"):
        with_resolver("/r", [])


# ---------------------------------------------------------------------------------------------
# A tiny DNS client (what dig would show: rcode and A records), run inside the namespace.


def dns_query(name: str, qtype: int) -> bytes:
    """A recursive query for ``name`` (id 0x1234)."""
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)


def parse_answer(data: bytes) -> tuple[int, list[str], list[int]]:
    """(rcode, IPv4 addresses of the A answers, their TTLs) of a response."""
    ident, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    assert ident == 0x1234 and flags & 0x8000 and qdcount == 1
    offset = 12
    while data[offset]:
        offset += data[offset] + 1
    offset += 5
    addresses, ttls = [], []
    for _ in range(ancount):
        assert data[offset] & 0xC0 == 0xC0  # dnsmasq compresses the name to the question
        rtype, _, ttl, length = struct.unpack("!HHIH", data[offset + 2 : offset + 12])
        rdata = data[offset + 12 : offset + 12 + length]
        if rtype == 1:
            addresses.append(socket.inet_ntoa(rdata))
            ttls.append(ttl)
        offset += 12 + length
    return flags & 0xF, addresses, ttls


def query_main(server: str, name: str, qtype: int) -> None:
    """Entry point run inside the namespace: print ``rcode addresses ttls``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(dns_query(name, qtype), (server, 53))
        rcode, addresses, ttls = parse_answer(sock.recv(4096))
    print(rcode, ",".join(addresses) or "-", ",".join(map(str, ttls)) or "-")


def test_dns_message_helpers() -> None:
    query = dns_query("a.test", 1)
    assert query[12:20] == b"\x01a\x04test\x00"
    response = bytearray(query)
    response[2:4] = struct.pack("!H", 0x8180)
    response[6:8] = struct.pack("!H", 1)
    response += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton("198.19.0.9")
    assert parse_answer(bytes(response)) == (0, ["198.19.0.9"], [30])


# ---------------------------------------------------------------------------------------------
# Real dnsmasq in a scratch namespace (root).


@dataclass
class Dns:
    netns: str
    folder: Path
    resolv_conf: Path
    log_file: Path
    pid_file: Path
    proc: subprocess.Popen[str]

    def in_ns(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def query(self, name: str, qtype: int = 1) -> tuple[int, list[str], list[str]]:
        call = f"query_main({DNS_ADDRESS!r}, {name!r}, {qtype})"
        code = f"from tests.integration.test_replay_dns import query_main; {call}"
        out = run(self.in_ns(["env", f"PYTHONPATH={PROJECT_ROOT}", sys.executable, "-c", code])).stdout.split()
        rcode, addresses, ttls = int(out[0]), out[1], out[2]
        return rcode, [] if addresses == "-" else addresses.split(","), [] if ttls == "-" else ttls.split(",")

    def getent(self, name: str) -> subprocess.CompletedProcess[str]:
        return run(self.in_ns(with_resolver(self.resolv_conf, ["getent", "ahostsv4", name])), check=False)


@pytest.fixture
def dns() -> Iterator[Dns]:
    netns = f"rl-dnstest-{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix=f"rl-o{os.getpid()}-dnstest-", dir="/tmp"))
    proc: subprocess.Popen[str] | None = None
    run(["ip", "netns", "add", netns])
    try:
        # On the namespace's loopback (this kernel may lack the dummy link type).
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        run(["ip", "-n", netns, "addr", "add", f"{DNS_ADDRESS}/32", "dev", "lo"])
        hosts = folder / "hosts"
        hosts.write_text(hosts_file_text(origin_addresses(["www.example.test", "cdn.example.test"])))
        resolv = folder / "resolv.conf"
        resolv.write_text(resolv_conf_text(DNS_ADDRESS, timeout_s=1, attempts=1))
        log_file, pid_file = folder / "dnsmasq.log", folder / "dnsmasq.pid"
        argv = ["ip", "netns", "exec", netns, *dnsmasq_command(DNS_ADDRESS, hosts, pid_file, log_file)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while "read " not in (log_file.read_text() if log_file.exists() else ""):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "dnsmasq did not read its hosts file"
            time.sleep(0.05)
        yield Dns(netns, folder, resolv, log_file, pid_file, proc)
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
            proc.communicate(timeout=10)  # also closes the pipe
        run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.root
def test_dnsmasq_answers_recorded_names_and_nxdomain_for_the_rest(dns: Dns) -> None:
    host_resolv = Path("/etc/resolv.conf").read_bytes()
    found = dns.getent("www.example.test")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split()[0] == "198.19.0.2"  # sorted: cdn.example.test is .1
    assert dns.getent("CDN.Example.Test").stdout.split()[0] == "198.19.0.1"
    assert dns.getent("unknown.example.test").returncode == 2  # not found
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv  # the bind mount stayed private

    assert dns.query("www.example.test") == (0, ["198.19.0.2"], ["0"])  # --local-ttl=0
    assert dns.query("unknown.example.test") == (3, [], [])  # NXDOMAIN, not forwarded
    assert dns.query("example.com") == (3, [], [])
    assert dns.query("www.example.test", qtype=28) == (0, [], [])  # AAAA: NODATA, no timeout

    log = dns.log_file.read_text()
    assert "query[A] unknown.example.test" in log and "is NXDOMAIN" in log
    assert int(dns.pid_file.read_text()) > 0

    listening = run(dns.in_ns(["ss", "-Hlnu"])).stdout.split("\n")
    local = {line.split()[3] for line in listening if line.strip()}
    assert local == {f"{DNS_ADDRESS}:53"}  # bound to that address only (not lo, not the wildcard)

    dns.proc.terminate()
    assert dns.proc.wait(timeout=10) == 0


@pytest.mark.root
def test_with_resolver_passes_argv_untouched_and_sees_our_file(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(resolv_conf_text("198.18.0.53"))
    odd = ["a b", "$(touch /tmp/rl-should-not-exist)", ";", "*", "'\""]
    shown = run(with_resolver(resolv, ["printf", "%s|", *odd])).stdout
    assert shown == "|".join(odd) + "|"
    assert not Path("/tmp/rl-should-not-exist").exists()
    assert run(with_resolver(resolv, ["cat", "/etc/resolv.conf"])).stdout == resolv.read_text()
    assert Path("/etc/resolv.conf").read_text() != resolv.read_text()
