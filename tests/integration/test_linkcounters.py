"""The wire counters (topologies.linkcounters) on two scratch namespaces joined by a veth pair: a
connection's SYN, SYN/ACK, its RSTs and its bytes, counted on the client's interface only."""

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from topologies.linkcounters import CHAINS, LinkCounters, difference
from topologies.shell import run

pytestmark = pytest.mark.root

#: Run in the server namespace: accept one connection, read its line, reply, and reset it.
SERVER = """
import socket, struct, sys
srv = socket.socket(); srv.bind(("10.99.0.2", 7000)); srv.listen(); print("up", flush=True)
conn, _ = srv.accept(); conn.recv(100); conn.sendall(b"x" * 5000)
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); conn.close()
"""
#: Run in the client namespace: one connection that sends a line and reads until the reset.
CLIENT = """
import socket
s = socket.create_connection(("10.99.0.2", 7000)); s.sendall(b"hello\\n")
try:
    while s.recv(65536): pass
except ConnectionResetError:
    pass
socket.socket().connect_ex(("10.99.0.2", 7001))  # a closed port: one SYN out, one RST back
"""


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    client, server = f"rl-lc-{tag}c", f"rl-lc-{tag}s"
    for name in (client, server):
        run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", client, "link", "add", "a9", "type", "veth", "peer", "name", "b9", "netns", server])
        for ns, intf, address in ((client, "a9", "10.99.0.1/24"), (server, "b9", "10.99.0.2/24")):
            run(["ip", "-n", ns, "addr", "add", address, "dev", intf])
            run(["ip", "-n", ns, "link", "set", intf, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        yield client, server
    finally:
        for name in (client, server):
            run(["ip", "netns", "del", name], check=False)


def test_a_connection_is_counted_on_the_client_interface(pair):
    client, server = pair
    counters = LinkCounters(lambda argv: run(["ip", "netns", "exec", client, *argv]).stdout, ["a9"])
    counters.install()
    before = counters.reading()
    srv = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        run(["ip", "netns", "exec", client, sys.executable, "-c", CLIENT])
        srv.wait(timeout=10)
    finally:
        srv.kill()
    cost = difference(before, counters.reading())
    assert cost.syns_sent == 2  # the connection and the closed port; no retransmission on a veth
    assert cost.synacks_received == 1
    assert cost.rsts_received == 2  # the server's abort and the closed port's answer
    assert cost.rsts_sent == 0
    assert cost.bytes > 5000 and cost.packets >= 8
    assert counters.remove() == []
    listing = run(["ip", "netns", "exec", client, "iptables-save", "-t", "mangle"]).stdout
    assert all(chain not in listing for chain in CHAINS.values())


def test_loopback_traffic_is_not_counted(pair):
    client, _ = pair
    counters = LinkCounters(lambda argv: run(["ip", "netns", "exec", client, *argv]).stdout, ["a9"])
    counters.install()
    before = counters.reading()
    code = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); " \
           "socket.create_connection(s.getsockname()).close()"  # fmt: skip
    run(["ip", "netns", "exec", client, sys.executable, "-c", code])
    assert difference(before, counters.reading()).packets == 0


def test_a_connection_redirected_to_a_local_port_is_not_counted(pair):
    """A connection routed out of the access interface but REDIRECTed (nat OUTPUT) to a local
    listener, as the client proxy takes wget's connections, never reaches the link: not counted.
    (Counted in filter OUTPUT it was: that hook still sees the original route's device, which
    added one SYN per experiment 2 connection and wget's packets to the proxy.)"""
    client, _ = pair
    counters = LinkCounters(lambda argv: run(["ip", "netns", "exec", client, *argv]).stdout, ["a9"])
    counters.install()
    nat = ["ip", "netns", "exec", client, "iptables", "-w", "-t", "nat"]
    run([*nat, "-A", "OUTPUT", "-p", "tcp", "-d", "10.99.0.2", "--dport", "7002", "-j", "REDIRECT",
         "--to-ports", "7003"])  # fmt: skip
    before = counters.reading()
    code = "import socket; s = socket.socket(); s.bind(('0.0.0.0', 7003)); s.listen(); " \
           "c = socket.create_connection(('10.99.0.2', 7002)); c.sendall(b'x' * 3000); " \
           "a, _ = s.accept(); a.recv(5000); c.close(); a.close()"  # fmt: skip
    run(["ip", "netns", "exec", client, sys.executable, "-c", code])
    cost = difference(before, counters.reading())
    assert (cost.syns_sent, cost.packets) == (0, 0)
