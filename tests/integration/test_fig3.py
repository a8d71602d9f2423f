"""Figure 3 on real namespaces: link fidelity on both paths, run-time changes, failure, teardown."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.validate_links import ProbeRound, Tolerances, ValidationPlan, measure_level, rtt_checks
from topologies.cleanup import find_our_processes
from topologies.fig3 import CLIENT_A1, CLIENT_A2, SERVER_B1, Fig3Config, Fig3Network, PathConfig
from topologies.links import LinkError, TapWireLink, choose_backend
from topologies.lossrules import LossRule, add_loss_rule, dropped_packets
from topologies.shell import in_netns, run

pytestmark = pytest.mark.root

# The test checks that each link applies the configured delay and loss; the tail-latency target (p99 within
# 3 ms) is a fidelity figure measured by `make validate-links` on a quiet machine. CI shares its 2 cores with
# whatever else runs, and a busy scheduler delays the userspace emulator by a few ms now and then (CI measured
# p99 errors of 5-7 ms once). 10 ms still fails a link that adds a queue or misses the delay (half of path 1's
# RTT); 99.9 % intervals keep a correct link from failing the loss check by chance.
UNDER_CI = Tolerances(rtt_p99_ms=10.0, loss_confidence=0.999)
SMALL = ValidationPlan(rtt_samples=300, loss_probes=3000, loss_interval_ms=0.3, tolerances=UNDER_CI)


def _fig3(loss1=0.0, direction="both"):
    return Fig3Config(
        path1=PathConfig(rtt_ms=20, rate_mbit=10, loss_pct=loss1, loss_direction=direction),
        path2=PathConfig(rtt_ms=40, rate_mbit=10),
    )


def _listener(net, port, then):
    """A TCP listener on the server running ``then`` (Python) after listen()."""
    code = ("import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('{SERVER_B1}',{port}));s.listen(16)\n{then}")  # fmt: skip
    server = net.popen(net.server, [sys.executable, "-c", code])
    time.sleep(0.3)
    return server


def test_rtt_and_loss_fidelity_on_both_paths():
    with Fig3Network(_fig3(loss1=10.0)) as net:
        checks = measure_level(net, SMALL, 10.0)
    failed = [c for c in checks if not c.ok]
    assert not failed, failed
    metrics = {(c.path, c.metric) for c in checks}
    for path in (1, 2):
        assert {(path, "rtt_p50_error_ms"), (path, "loss_up_pct"), (path, "loss_down_pct")} <= metrics
    lossy = next(c for c in checks if c.path == 1 and c.metric == "loss_up_pct")
    assert 7.0 < lossy.measured < 13.0


def test_parameters_change_at_run_time_without_rebuild():
    with Fig3Network(_fig3()) as net:
        link = net.path_link(1)
        net.set_path(1, PathConfig(rtt_ms=60, rate_mbit=10))
        assert net.path_link(1) is link
        probes = ProbeRound(net)
        result = ProbeRound.result(probes.send(1, 11, 200, 2.0))
        probes.received()
    checks = rtt_checks(0.0, 1, 60.0, result.rtt_ms, UNDER_CI)
    assert all(c.ok for c in checks), checks


def test_default_route_is_path1_and_source_address_picks_path():
    with Fig3Network(_fig3()) as net:
        routes = run(in_netns(net.client.pid, ["ip", "route", "get", SERVER_B1])).stdout
        assert "dev a1" in routes
        routes2 = run(in_netns(net.client.pid, ["ip", "route", "get", SERVER_B1, "from", CLIENT_A2])).stdout
        assert "dev a2" in routes2
        meta = net.describe()
        assert meta["sysctls"]["client"]["net.ipv4.tcp_congestion_control"] == "cubic"
        assert meta["sysctls"]["server"]["net.mptcp.blackhole_timeout"] == "0"
        assert CLIENT_A2 in meta["mptcp_endpoints"]


def test_killing_the_emulator_makes_the_link_fail_not_pass_unshaped():
    backend = choose_backend()
    if backend.backend.value != "userspace":
        pytest.skip("netem backend has no emulator process")
    with Fig3Network(_fig3(), backend) as net:
        link = net.path_link(1)
        assert isinstance(link, TapWireLink) and link.wire is not None
        os.kill(link.wire.pid, signal.SIGKILL)
        link.wire.proc.wait(timeout=5)
        with pytest.raises(LinkError, match="not running"):
            net.check_links()
        shown = run(in_netns(net.client.pid, ["ip", "link", "show", "dev", "a1"]), check=False)
        assert shown.returncode != 0, "interface a1 survived its emulator"
        probes = ProbeRound(net)
        sender = probes.send(1, 11, 50, 2.0)
        out, _ = sender.communicate(timeout=30)
        replies = json.loads(out)["replies"] if sender.returncode == 0 else 0
        assert replies == 0, "traffic crossed a link whose emulator is dead"
        # Path 2 is untouched.
        assert len(ProbeRound.result(probes.send(2, 21, 50, 2.0)).rtt_ms) >= 45
        probes.received()


def test_syn_only_loss_rule_blocks_connection_on_one_path():
    with Fig3Network(_fig3()) as net:
        server = _listener(net, 7000, "time.sleep(30)")
        rule = LossRule(chain="OUTPUT", loss_pct=100, match="tcp-syn", out_interface="a1", comment="rl-test-syn")
        add_loss_rule(net.client.pid, rule)
        code = ("import socket,sys\ns=socket.socket();s.settimeout(1.5);s.bind((sys.argv[1],0))\n"
                "try:\n  s.connect(('" + SERVER_B1 + "',7000));print('connected')\n"
                "except OSError as e:\n  print('failed',e)")  # fmt: skip
        outcome = {}
        for address in (CLIENT_A1, CLIENT_A2):
            out = run(in_netns(net.client.pid, [sys.executable, "-c", code, address]), timeout=10).stdout
            outcome[address] = out.split()[0]
        assert outcome == {CLIENT_A1: "failed", CLIENT_A2: "connected"}
        assert dropped_packets(net.client.pid, rule) >= 1
        server.terminate()


TEARDOWN_SCRIPT = f"""
import sys, time
sys.path.insert(0, {os.getcwd()!r})
from topologies.fig3 import Fig3Network, Fig3Config
with Fig3Network(Fig3Config()) as net:
    net.popen(net.server, ["sleep", "300"])
    print(net.run_tag, net.path_link(1).describe().get("emulator_pid"), flush=True)
    time.sleep(300)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_namespace_interface_or_process(sig):
    proc = subprocess.Popen([sys.executable, "-c", TEARDOWN_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        tag, emulator_pid = proc.stdout.readline().split()
        ours = [p for p, cmd in find_our_processes() if tag in cmd]
        assert ours, "the running network's processes were not found"
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = [(p, cmd) for p, cmd in find_our_processes() if tag in cmd]
    assert not leftovers, leftovers
    if emulator_pid != "None":
        assert not os.path.exists(f"/proc/{emulator_pid}")
    names = run(["ip", "netns", "list"]).stdout
    assert tag not in names
    # The 'sleep 300' started inside the server namespace is gone too.
    sleepers = [p for p, cmd in find_our_processes() if cmd.startswith("sleep 300")]
    assert not sleepers


def test_tcp_connects_over_both_paths():
    with Fig3Network(_fig3()) as net:
        server = _listener(net, 7001, "for _ in range(2):\n  c,_=s.accept();c.close()")
        for address in (CLIENT_A1, CLIENT_A2):
            code = (f"import socket\ns=socket.create_connection(('{SERVER_B1}',7001),timeout=3,"
                    f"source_address=('{address}',0));print('ok')")  # fmt: skip
            assert run(in_netns(net.client.pid, [sys.executable, "-c", code])).stdout.strip() == "ok"
        server.wait(timeout=5)
