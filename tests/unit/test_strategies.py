"""The strategy registry: every strategy once, and every consumer reading it."""

import argparse

import pytest

from analysis import experiment1_cells, style, transport_validation
from experiments.profile import KNOWN_STRATEGIES
from experiments.profile2 import EXPERIMENT2_STRATEGIES, USERSPACE_STRATEGIES
from robe.cli import build_parser
from robe.client import ConnectError, connect
from robe.protocol.connection import USER_STRATEGIES, ClientConnection
from robe.proxy.aio_connect import check_strategy
from robe.race import Race
from robe.strategies import (
    STRATEGIES,
    Kind,
    Protocol,
    SetupPath,
    StrategyError,
    get_strategy,
    is_userspace,
    kernel_mptcp,
    kernel_strategy,
    names,
    plot_styles,
    with_setup_path,
)


def test_each_strategy_once_with_a_distinct_plot_style():
    assert len(names()) == len(set(names())) == len(STRATEGIES)
    styles = list(plot_styles().values())
    assert len({(s.colour, s.marker, s.hatch) for s in styles}) == len(styles)
    assert len({s.marker for s in styles}) == len(styles)  # markers alone tell them apart
    assert list(plot_styles()) == list(names())  # the legend order is the registry's
    for strategy in STRATEGIES.values():
        assert strategy.summary and strategy.peer


def test_kinds_and_what_follows_from_them():
    assert names(Kind.USERSPACE) == ("mptcp-user", "robe-downgrade", "robe-bbm", "robe-esim", "robe-ips-user")
    assert set(names(Kind.KERNEL)) >= {"tcp", "mptcp", "robe-sim", "robe-timer", "robe-ips", "robe-ips-timer",
                                      "robe-ips-sim"}  # fmt: skip
    assert is_userspace("robe-esim") and not is_userspace("robe-ips") and not is_userspace("nope")
    assert kernel_mptcp() == ("mptcp", "robe-sim", "robe-timer", "robe-ips", "robe-ips-timer", "robe-ips-sim")
    assert with_setup_path(SetupPath.FASTEST) == ("robe-sim", "robe-downgrade", "robe-bbm", "robe-esim")
    assert get_strategy("tcp").protocol is Protocol.TCP and not get_strategy("tcp").multipath
    with pytest.raises(StrategyError, match="userspace transport"):
        kernel_strategy("robe-downgrade")


def test_every_userspace_strategy_is_implemented_by_the_state_machine():
    for name in names(Kind.USERSPACE):
        assert ClientConnection(strategy=name).start()


def test_every_kernel_strategy_runs_a_race():
    for name in names(Kind.KERNEL):
        assert Race(get_strategy(name), 2, 10**9).start(0)


def test_consumers_read_the_registry():
    assert names() == KNOWN_STRATEGIES
    assert USER_STRATEGIES == USERSPACE_STRATEGIES == names(Kind.USERSPACE)
    assert set(names()) <= set(EXPERIMENT2_STRATEGIES)
    for name, look in plot_styles().items():  # every figure draws the registry's style
        drawn = style.style(name)
        assert (drawn.color, drawn.marker, drawn.hatch, drawn.family) == (look.colour, look.marker, look.hatch,
                                                                          get_strategy(name).kind.value)  # fmt: skip
    assert [s for s in style.STRATEGIES if s in STRATEGIES] == list(names())  # the legend order is the registry's
    assert experiment1_cells.slack_ms("robe-esim") > experiment1_cells.slack_ms("robe-ips")  # userspace offset
    assert kernel_mptcp() == transport_validation.KERNEL_JOINERS
    assert transport_validation.CLASSIC_JOINERS == ("mptcp", "robe-timer", "mptcp-user")
    for name in names():
        check_strategy(name)  # the experiment 2 proxies accept it
    help_text = build_parser().format_help() + " ".join(
        str(a.help) for a in _connect_parser()._actions if a.dest == "strategy"
    )
    assert all(name in help_text for name in names())


def _connect_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            connect_parser: argparse.ArgumentParser = action.choices["connect"]
            return connect_parser
    raise AssertionError("no connect command")


def test_kernel_connect_refuses_a_userspace_strategy():
    with pytest.raises(ConnectError, match="userspace strategy"):
        connect(conn_id="x", strategy=get_strategy("robe-bbm"), server="198.18.3.1:1", sources=["198.18.1.1"])
