"""The sans-IO race: which path is attempted when, who wins, who is reset, when to give up."""

from hypothesis import given, settings
from hypothesis import strategies as st

from robe.race import Action, AttemptState, Race, Step
from robe.strategies import STRATEGIES, get_strategy

MS = 1_000_000


def _race(name: str, paths: int = 2, timer_ms: int = 1000) -> Race:
    return Race(get_strategy(name), paths, timer_ms * MS)


def test_sim_attempts_every_path_at_once_and_resets_the_losers():
    race = _race("robe-sim", 3)
    assert race.start(0) == [Step(Action.CONNECT, 0), Step(Action.CONNECT, 1), Step(Action.CONNECT, 2)]
    steps = race.on_established(1, 20 * MS)
    assert steps == [Step(Action.WIN, 1), Step(Action.RESET, 0), Step(Action.RESET, 2)]
    assert race.winner == 1 and race.finished
    assert race.on_established(0, 21 * MS) == []  # already reset: nothing more to do


def test_mptcp_uses_the_default_path_only_and_gives_up_with_the_kernel():
    race = _race("mptcp")
    assert race.start(0) == [Step(Action.CONNECT, 0)]
    assert race.timer_due_ns is None
    assert race.on_failed(0, 127_000 * MS, "Connection timed out") == [Step(Action.GIVE_UP, None)]
    assert [e.what for e in race.events] == ["connect_called", "attempt", "failed", "gave_up"]


def test_timer_starts_the_next_path_when_it_fires_and_keeps_the_first_attempt():
    race = _race("robe-timer", 3, timer_ms=1000)
    assert race.start(0) == [Step(Action.CONNECT, 0)]
    assert race.on_timer(999 * MS) == []  # too early
    assert race.on_timer(1000 * MS) == [Step(Action.CONNECT, 1)]
    assert race.timer_due_ns == 2000 * MS
    assert race.on_timer(2000 * MS) == [Step(Action.CONNECT, 2)]
    assert race.timer_due_ns is None  # every path started
    assert race.on_established(1, 2020 * MS) == [Step(Action.WIN, 1), Step(Action.RESET, 0), Step(Action.RESET, 2)]


def test_timer_moves_on_at_once_when_the_only_attempt_fails():
    race = _race("robe-timer")
    race.start(0)
    assert race.on_failed(0, 5 * MS, "Network is unreachable") == [Step(Action.CONNECT, 1)]
    assert race.on_failed(1, 10 * MS, "Connection refused") == [Step(Action.GIVE_UP, None)]


def test_bad_construction_is_refused():
    import pytest

    with pytest.raises(ValueError, match="path_count"):
        Race(get_strategy("robe-sim"), 0, MS)
    with pytest.raises(ValueError, match="timer_ns"):
        Race(get_strategy("robe-timer"), 2, 0)


events = st.lists(
    st.tuples(st.sampled_from(["established", "failed", "timer"]), st.integers(0, 3), st.integers(1, 3_000)),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(STRATEGIES)), st.integers(1, 4), events)
def test_invariants_under_any_event_order(name, paths, happenings):
    race = Race(get_strategy(name), paths, 1000 * MS)
    now = 0
    connected = {s.path for s in race.start(now)}
    wins = 0
    gave_up = 0
    for kind, drawn, gap_ms in happenings:
        now += gap_ms * MS
        path = drawn % paths
        if kind == "established":
            steps = race.on_established(path, now)
        elif kind == "failed":
            steps = race.on_failed(path, now, "x")
        else:
            steps = race.on_timer(now)
        for step in steps:
            if step.action is Action.CONNECT:
                assert step.path not in connected, "a path is attempted twice"
                connected.add(step.path)
            wins += step.action is Action.WIN
            gave_up += step.action is Action.GIVE_UP
    # At most one winner, never both a winner and a give-up; only started paths can win.
    assert wins <= 1 and gave_up <= 1 and wins + gave_up <= 1
    if race.winner is not None:
        assert race.winner in connected and race.states[race.winner] is AttemptState.ESTABLISHED
        assert AttemptState.CONNECTING not in race.states
    if not get_strategy(name).start_all_at_once and not get_strategy(name).staggered:
        assert connected == {0}
