"""RobE_IPS in the race: the order of paths, IPS+SIM's switch from SIM to IPS, what the history is fed."""

import pytest

from robe.ips import PathHistory
from robe.race import Action, Race, Step
from robe.selection import HistoryFeed, plan, shared_history
from robe.strategies import get_strategy

MS = 1_000_000
A1, A2, A3 = "198.18.1.1", "198.18.2.1", "198.18.4.1"
SERVER = "198.18.3.1"
KEY = "198.18.3.0/24"


def test_race_follows_the_order_for_the_first_attempt_and_the_timer():
    race = Race(get_strategy("robe-ips-timer"), 3, 1000 * MS, order=[2, 0, 1])
    assert race.initial_paths() == [2]
    assert race.start(0) == [Step(Action.CONNECT, 2)]
    assert race.on_timer(1000 * MS) == [Step(Action.CONNECT, 0)]
    assert race.on_failed(2, 1100 * MS, "refused") == []  # path 0 still in flight
    assert race.on_failed(0, 1200 * MS, "refused") == [Step(Action.CONNECT, 1)]  # nothing in flight: next at once


def test_ips_alone_tries_one_path_and_gives_up_with_it():
    race = Race(get_strategy("robe-ips"), 2, 1000 * MS, order=[1, 0])
    assert race.start(0) == [Step(Action.CONNECT, 1)]
    assert race.timer_due_ns is None
    assert race.on_failed(1, 3000 * MS, "timed out") == [Step(Action.GIVE_UP, None)]


def test_order_must_be_a_permutation():
    with pytest.raises(ValueError, match="permutation"):
        Race(get_strategy("robe-ips"), 2, MS, order=[1, 1])


def test_plan_without_history_is_the_default_path_and_sim_for_ips_sim():
    history = PathHistory()
    ips = plan(get_strategy("robe-ips"), history, SERVER, [A1, A2], 0)
    assert ips.order == [0, 1] and ips.mode == "ips" and ips.key == KEY
    sim = plan(get_strategy("robe-ips-sim"), history, SERVER, [A1, A2], 0)
    assert sim.mode == "sim" and sim.strategy.start_all_at_once
    plain = plan(get_strategy("robe-sim"), history, SERVER, [A1, A2], 0)
    assert plain.mode == "default" and plain.key == ""


def test_plan_uses_the_history_and_ips_sim_stops_racing_once_it_trusts_a_path():
    history = PathHistory()
    history.rtt_sample(KEY, A2, 0.020, 1.0)
    history.rtt_sample(KEY, A1, 0.040, 1.0)
    ips = plan(get_strategy("robe-ips"), history, SERVER, [A1, A2], 2 * 10**9)
    assert ips.order == [1, 0] and ips.history[A2]["srtt_ms"] == 20.0
    # RTT samples alone (no set-up outcome): IPS+SIM trusts no path yet and races both.
    assert plan(get_strategy("robe-ips-sim"), history, SERVER, [A1, A2], 2 * 10**9).mode == "sim"
    attempt = history.attempt_started(KEY, A2, 2.0)
    history.attempt_established(attempt, 2.02, retransmitted=0)
    sim = plan(get_strategy("robe-ips-sim"), history, SERVER, [A1, A2], 3 * 10**9)
    assert sim.mode == "ips" and not sim.strategy.start_all_at_once and sim.order == [1, 0]
    race = Race(sim.strategy, 2, 1000 * MS, order=sim.order)
    assert race.start(0) == [Step(Action.CONNECT, 1)]  # no SYN on the other path ...
    assert race.on_timer(1000 * MS) == [Step(Action.CONNECT, 0)]  # ... unless the trusted one is silent


def test_ips_sim_races_again_when_its_best_path_turns_lossy():
    history = PathHistory()
    first = history.attempt_started(KEY, A1, 0.0)
    history.attempt_established(first, 0.02, retransmitted=0)
    assert plan(get_strategy("robe-ips-sim"), history, SERVER, [A1, A2], 10**9).mode == "ips"
    lossy = history.attempt_started(KEY, A1, 1.0)
    history.attempt_established(lossy, 2.02, retransmitted=1)  # SYN retransmitted: a partial failure
    again = plan(get_strategy("robe-ips-sim"), history, SERVER, [A1, A2], 3 * 10**9)
    # A1: (1 + 0.5 + 0.5 prior) / (2 + 0.5) = 0.8 against the untried A2 (presumed 1): A2 first, untrusted.
    assert again.mode == "sim" and again.order == [1, 0] and again.strategy.start_all_at_once


def test_feed_reports_attempts_and_subflows_by_source_address():
    history = PathHistory()
    feed = HistoryFeed(history, KEY, [A1, A2])
    feed.started(0, 0)
    feed.started(1, 0)
    feed.established(1, 20 * MS, retransmitted=False)
    feed.dropped(0, 20 * MS)  # the SIM loser: no evidence either way
    assert history.snapshot(KEY, 0.03) == {A2: {"srtt_ms": 20.0, "failures": 0, "suspect": False, "success_rate": 1.0}}
    feed.subflow(f"{A1}:40000", 41_000, 500 * MS)
    feed.subflow(f"{A3}:40000", 5_000, 500 * MS)  # not one of this connection's paths: ignored
    assert history.order(KEY, [A1, A2, A3], 0.6) == [A2, A1, A3]
    feed.started(1, 1000 * MS)
    feed.failed(1, 1500 * MS)
    assert history.order(KEY, [A1, A2], 1.6) == [A1, A2]
    HistoryFeed(None, KEY, [A1]).started(0, 0)


def test_feed_counts_a_join_as_an_outcome_but_not_the_attempted_paths_subflow():
    history = PathHistory()
    feed = HistoryFeed(history, KEY, [A1, A2])
    feed.started(1, 0)
    feed.established(1, 20 * MS, retransmitted=0)
    feed.subflow(f"{A2}:40000", 20_000, 300 * MS, retransmits=3)  # its own handshake: counted already
    feed.subflow(f"{A1}:40001", 20_000, 300 * MS, retransmits=1)  # the path manager's join: one SYN lost
    snapshot = history.snapshot(KEY, 0.3)
    assert snapshot[A2]["success_rate"] == 1.0
    assert snapshot[A1]["success_rate"] == pytest.approx((0.5 + 0.5) / 1.5, abs=1e-3)  # without history: nothing to do


def test_after_a_sim_race_the_losers_path_join_is_an_outcome():
    history = PathHistory()
    feed = HistoryFeed(history, KEY, [A1, A2])
    feed.started(0, 0)
    feed.started(1, 0)
    feed.established(0, 20 * MS, retransmitted=0)
    feed.dropped(1, 20 * MS)  # SIM's loser: no evidence about A2 ...
    assert A2 not in history.snapshot(KEY, 0.02)
    feed.subflow(f"{A2}:40001", 40_000, 300 * MS, retransmits=0)  # ... but the path manager's join on A2 is
    feed.subflow(f"{A1}:40000", 20_000, 300 * MS, retransmits=2)  # the winner's own subflow: counted already
    snapshot = history.snapshot(KEY, 0.3)
    assert snapshot[A2]["success_rate"] == 1.0
    assert snapshot[A1]["success_rate"] == 1.0
    assert history.trusted(KEY, [A1, A2], 0.3) == A1  # both paths known good: IPS+SIM stops racing


def test_shared_history_is_one_per_scope():
    assert shared_history("x") is shared_history("x")
    assert shared_history("x") is not shared_history("y")


def test_feed_counts_a_timer_loser_as_overtaken_but_not_a_sim_loser():
    history = PathHistory()
    feed = HistoryFeed(history, KEY, [A1, A2])
    feed.started(1, 0)  # IPS+TIMER: the learnt path first ...
    feed.started(0, 500 * MS)  # ... the timer starts the other 0.5 s later
    feed.established(0, 540 * MS, retransmitted=False)
    feed.dropped(1, 540 * MS)
    assert history.snapshot(KEY, 0.6)[A2]["suspect"]
    sim_history = PathHistory()
    sim = HistoryFeed(sim_history, KEY, [A1, A2])
    sim.started(0, 0)
    sim.started(1, 8_000)  # SIM's second connect() a few microseconds after the first
    sim.established(1, 20 * MS, retransmitted=False)
    sim.dropped(0, 20 * MS)
    assert A1 not in sim_history.snapshot(KEY, 0.1)
