"""The RobE endpoints on Figure 3 with real kernel MPTCP: who wins, how fast, what the server logs."""

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from topologies.fig3 import CLIENT_A1, CLIENT_A2, SERVER_B1, Fig3Config, Fig3Network, PathConfig
from topologies.links import PROJECT_ROOT

pytestmark = pytest.mark.root
PORT = 5002


class Endpoints:
    """A Figure 3 network with ``robe serve`` running on the server."""

    def __init__(self, net: Fig3Network) -> None:
        self.net = net
        self.server = net.popen(net.server, [sys.executable, "-m", "robe", "serve", "--bind", SERVER_B1,
                                             "--port", str(PORT)], stdout=subprocess.PIPE, text=True,
                                cwd=PROJECT_ROOT)  # fmt: skip
        assert self.server.stdout is not None
        assert self.server.stdout.readline().startswith("LISTENING")

    def connect(self, strategy: str, *extra: str) -> dict[str, Any]:
        argv = [sys.executable, "-m", "robe", "connect", "--strategy", strategy, "--server", f"{SERVER_B1}:{PORT}",
                "--source", CLIENT_A1, "--source", CLIENT_A2, "--hold", "0.2", *extra]  # fmt: skip
        proc = self.net.popen(self.net.client, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=PROJECT_ROOT)  # fmt: skip
        out, err = proc.communicate(timeout=60)
        assert out.strip(), err
        record: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return record

    def server_lines(self) -> list[dict[str, Any]]:
        self.server.terminate()
        out, _ = self.server.communicate(timeout=10)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    config = Fig3Config(path1=PathConfig(rtt_ms=20), path2=PathConfig(rtt_ms=20), tcp_syn_retries=1,
                        tcp_syn_linear_timeouts=0)  # fmt: skip
    with Fig3Network(config) as net:
        yield Endpoints(net)


def _ms(record: dict[str, Any], key: str) -> float:
    return float(record[key] - record["connect_ns"]) / 1e6


def test_every_strategy_connects_in_one_rtt_and_mptcp_joins_the_other_path(endpoints):
    records = {s: endpoints.connect(s, "--conn-id", s) for s in ("tcp", "mptcp", "robe-sim", "robe-timer")}
    for strategy, record in records.items():
        assert record["status"] == "ok", record
        assert 19.5 < _ms(record, "established_ns") < 25, (strategy, _ms(record, "established_ns"))
    assert records["tcp"]["subflows"] == [] and records["tcp"]["fallback_tcp"] is None
    for strategy in ("mptcp", "robe-sim", "robe-timer"):
        record = records[strategy]
        assert record["fallback_tcp"] is False
        locals_ = {flow["local"].split(":")[0] for flow in record["subflows"]}
        assert locals_ == {CLIENT_A1, CLIENT_A2}, (strategy, record["subflows"])
    logged = {line["conn"]: line for line in endpoints.server_lines() if line["event"] == "request"}
    assert set(logged) == set(records)
    assert logged["tcp"]["mptcp"] is False and logged["mptcp"]["mptcp"] is True
    for strategy, record in records.items():
        setup = (logged[strategy]["first_bytes_ns"] - record["connect_ns"]) / 1e6
        assert 29.5 < setup < 36, (strategy, setup)


def test_dead_default_path_sim_wins_on_path_2_timer_after_its_timer_mptcp_fails(endpoints):
    endpoints.net.set_path(1, PathConfig(rtt_ms=20, loss_pct=100))
    sim = endpoints.connect("robe-sim")
    assert sim["status"] == "ok" and sim["winner"] == 1
    assert _ms(sim, "established_ns") < 25
    assert [e["event"] for e in sim["events"] if e["path"] == 0] == ["attempt", "reset"]

    timer = endpoints.connect("robe-timer", "--timer", "0.5")
    assert timer["status"] == "ok" and timer["winner"] == 1
    assert 519 < _ms(timer, "established_ns") < 540
    fired = [e for e in timer["events"] if e["event"] == "timer"]
    assert len(fired) == 1 and 499 < (fired[0]["t_ns"] - timer["connect_ns"]) / 1e6 < 510

    # tcp_syn_retries=1: SYNs at 0 and 1 s, the kernel gives up at 3 s.
    mptcp = endpoints.connect("mptcp")
    assert mptcp["status"] == "failed" and "timed out" in mptcp["error"]
    assert mptcp["syn_retransmits"]["0"] >= 1

    censored = endpoints.connect("tcp", "--timeout", "0.5")
    assert censored["status"] == "censored"


def test_a_malformed_request_is_rejected_and_logged(endpoints):
    code = (f"import socket;s=socket.create_connection(('{SERVER_B1}',{PORT}),source_address=('{CLIENT_A1}',0));"
            "s.sendall(b'GET / HTTP/1.1\\n');print(s.recv(10))")  # fmt: skip
    endpoints.net.client.cmd(f'{sys.executable} -c "{code}"')
    lines = endpoints.server_lines()
    assert any(line["event"] == "rejected" and "not JSON" in line["reason"] for line in lines), lines


def test_userspace_strategies_on_figure3(endpoints):
    server = endpoints.net.popen(endpoints.net.server, [sys.executable, "-m", "robe", "serve-user", "--bind",
                                 SERVER_B1, "--port", "5004"], stdout=subprocess.PIPE, text=True,
                                 cwd=PROJECT_ROOT)  # fmt: skip
    assert server.stdout is not None and server.stdout.readline().startswith("LISTENING")

    def connect(strategy: str) -> dict[str, Any]:
        argv = [sys.executable, "-m", "robe", "connect", "--strategy", strategy, "--server", f"{SERVER_B1}:5004",
                "--source", CLIENT_A1, "--source", CLIENT_A2, "--hold", "0.2"]  # fmt: skip
        proc = endpoints.net.popen(endpoints.net.client, argv, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
        out, _ = proc.communicate(timeout=60)
        record: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return record

    downgrade = connect("robe-downgrade")
    assert downgrade["status"] == "ok" and len(downgrade["subflows"]) == 2
    endpoints.net.set_path(1, PathConfig(rtt_ms=20, loss_pct=100))
    dead = connect("robe-downgrade")
    assert dead["status"] == "ok" and dead["winner"] == 1 and _ms(dead, "established_ns") < 25
    classic = connect("mptcp-user")  # tcp_syn_retries=1: the kernel gives up on path 1 after 3 s
    assert classic["status"] == "failed" and "timed out" in classic["error"]
    server.terminate()


class Agent:
    """A ``robe agent`` in the client host: the path history lives as long as the agent."""

    def __init__(self, net: Fig3Network) -> None:
        self.proc = net.popen(net.client, [sys.executable, "-m", "robe", "agent"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "READY"
        self.count = 0

    def connect(self, strategy: str, scope: str, timer_s: float = 0.5) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.count += 1
        request = {
            "conn_id": f"{strategy}-{self.count}",
            "strategy": strategy,
            "server": f"{SERVER_B1}:{PORT}",
            "sources": [CLIENT_A1, CLIENT_A2],
            "timer_s": timer_s,
            "hold_s": 0.2,
            "history_scope": scope,
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        record: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return record

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


def test_ips_strategies_learn_the_faster_path_and_leave_a_dead_one():
    # The default path is the slow one (40 ms), as LTE in the paper's experiment 2.
    config = Fig3Config(path1=PathConfig(rtt_ms=40), path2=PathConfig(rtt_ms=20), tcp_syn_retries=1,
                        tcp_syn_linear_timeouts=0)  # fmt: skip
    with Fig3Network(config) as net:
        Endpoints(net)
        agent = Agent(net)
        try:
            first = agent.connect("robe-ips", "a")  # no history: the default path
            assert first["status"] == "ok" and first["winner"] == 0 and first["ips_mode"] == "ips"
            assert 39.5 < _ms(first, "established_ns") < 46
            assert {flow["local"].split(":")[0] for flow in first["subflows"]} == {CLIENT_A1, CLIENT_A2}
            second = agent.connect("robe-ips", "a")  # the join on path 2 showed its 20 ms
            assert second["status"] == "ok" and second["winner"] == 1 and second["path_order"] == [1, 0]
            assert 19.5 < _ms(second, "established_ns") < 25
            assert [e["event"] for e in second["events"] if e["path"] == 0] == []  # no SYN on the other path
            other_scope = agent.connect("robe-ips", "b")  # a separate history knows nothing
            assert other_scope["winner"] == 0

            sim = agent.connect("robe-ips-sim", "c")
            assert sim["ips_mode"] == "sim" and sim["winner"] == 1
            assert [e["event"] for e in sim["events"] if e["path"] == 0] == ["attempt", "reset"]
            then = agent.connect("robe-ips-sim", "c")
            assert then["ips_mode"] == "ips" and then["winner"] == 1 and then["path_order"] == [1, 0]
            assert [e["event"] for e in then["events"] if e["path"] == 0] == []

            timer_first = agent.connect("robe-ips-timer", "d")
            assert timer_first["winner"] == 0
            assert agent.connect("robe-ips-timer", "d")["winner"] == 1

            net.set_path(2, PathConfig(rtt_ms=20, loss_pct=100))  # the learnt path dies
            timer_dead = agent.connect("robe-ips-timer", "d")  # tries path 2, the timer moves it to path 1
            assert timer_dead["status"] == "ok" and timer_dead["winner"] == 0
            assert 539 < _ms(timer_dead, "established_ns") < 560
            timer_after = agent.connect("robe-ips-timer", "d")  # path 2 is suspect now: path 1 at once
            assert timer_after["winner"] == 0 and _ms(timer_after, "established_ns") < 46
            assert timer_after["path_order"] == [0, 1]

            dead = agent.connect("robe-ips", "a")  # IPS alone has no fallback: the kernel gives up
            assert dead["status"] == "failed" and dead["path_order"] == [1, 0]
            recovered = agent.connect("robe-ips", "a")
            assert recovered["status"] == "ok" and recovered["winner"] == 0
        finally:
            agent.close()
