"""Endpoint pieces that need no network: strategies, request parsing, the CLI's usage errors."""

import json
import subprocess
import sys

import pytest

from robe.client import ConnectError, connect
from robe.server import parse_request
from robe.strategies import Protocol, StrategyError, get_strategy
from topologies.links import PROJECT_ROOT


def test_strategies_are_what_the_paper_and_drafts_define():
    assert get_strategy("tcp").protocol is Protocol.TCP
    assert get_strategy("mptcp").protocol is Protocol.MPTCP and not get_strategy("mptcp").start_all_at_once
    assert get_strategy("robe-sim").start_all_at_once
    assert get_strategy("robe-timer").staggered
    with pytest.raises(StrategyError, match=r"'robe-magic'.*known: tcp, mptcp"):
        get_strategy("robe-magic")


def test_request_parsing_accepts_only_a_connection_id():
    assert parse_request(b'{"conn": "r1-abc"}') == "r1-abc"
    for bad, message in [(b"GET / HTTP/1.1", "not JSON"), (b"[1]", "lacks"), (b'{"conn": ""}', "lacks"),
                         (b'{"conn": 5}', "lacks"), (json.dumps({"conn": "x" * 201}).encode(), "longer")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_request(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server": "198.18.3.1"}, "ADDRESS:PORT"),
        ({"server": "server:80"}, "not an IPv4 address"),
        ({"sources": []}, "at least one source"),
        ({"sources": ["a1"]}, "'a1' is not an IPv4 address"),
        ({"timeout_s": 0}, "timeout_s=0"),
    ],
)
def test_connect_rejects_bad_arguments_before_opening_sockets(kwargs, message):
    args = {"conn_id": "x", "strategy": get_strategy("tcp"), "server": "198.18.3.1:80", "sources": ["198.18.1.1"]}
    with pytest.raises(ConnectError, match=message):
        connect(**{**args, **kwargs})


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robe", *argv], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=30, check=False)  # fmt: skip


def test_cli_usage_errors_exit_2_with_a_clear_message():
    bad = _cli("connect", "--strategy", "nope", "--server", "198.18.3.1:5", "--source", "198.18.1.1")
    assert bad.returncode == 2 and "strategy='nope': unknown" in bad.stderr
    bad = _cli("connect", "--strategy", "tcp", "--server", "198.18.3.1:5", "--source", "198.18.1.1", "--timer", "-1")
    assert bad.returncode == 2 and "--timer" in bad.stderr
    assert "robe-sim" in _cli("connect", "--help").stdout


def test_agent_answers_bad_requests_with_an_error_record():
    from robe.cli import agent_answer

    request = '{"conn_id": "x", "strategy": "nope", "server": "198.18.3.1:5", "sources": ["198.18.1.1"]}'
    for line, message in [("[]", "JSON object"), ('{"strategy": "tcp", "color": 1}', "unknown field(s) color"),
                          ('{"strategy": "tcp"}', "field 'conn_id' missing"), (request, "'nope': unknown"),
                          ('{"conn_id": 7, "strategy": "tcp"}', "conn_id=7: not a str"), ("not json", "bad request"),
                          ('{"conn_id": "x", "strategy": "tcp", "server": "1.2.3.4", "sources": ["198.18.1.1"]}',
                           "ADDRESS:PORT")]:  # fmt: skip
        answer = json.loads(agent_answer(line))
        assert answer["status"] == "error" and message in answer["error"], (line, answer)
