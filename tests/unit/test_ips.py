"""RobE_IPS's path history (robe.ips): filtering, ageing, ties, bounds, vanished paths."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robe.ips import Attempt, HistoryConfig, HistoryError, PathHistory, destination_key

KEY = "198.18.3.0/24"
P1, P2, P3 = "198.18.1.1", "198.18.2.1", "198.18.4.1"


def history(**overrides: float | int) -> PathHistory:
    return PathHistory(HistoryConfig(**overrides))  # type: ignore[arg-type]


def establish(h: PathHistory, path: str, start: float, rtt: float, key: str = KEY) -> None:
    h.attempt_established(h.attempt_started(key, path, start), start + rtt, retransmitted=False)


def test_no_history_gives_the_default_order() -> None:
    h = history()
    assert h.order(KEY, [P1, P2], 0.0) == [P1, P2]
    assert h.order(KEY, [P2, P1], 0.0) == [P2, P1]  # the caller's default path first
    assert not h.has_history(KEY, [P1, P2], 0.0)


def test_destination_key_is_the_prefix() -> None:
    assert destination_key("198.18.3.1") == KEY
    assert destination_key("198.18.3.200") == KEY
    assert destination_key("10.1.2.3", 16) == "10.1.0.0/16"
    with pytest.raises(HistoryError, match="not-an-ip"):
        destination_key("not-an-ip")


def test_lower_filtered_rtt_goes_first_and_other_destinations_are_apart() -> None:
    h = history()
    establish(h, P1, 0.0, 0.040)
    establish(h, P2, 0.1, 0.020)
    assert h.order(KEY, [P1, P2], 1.0) == [P2, P1]
    assert h.order("10.0.0.0/24", [P1, P2], 1.0) == [P1, P2]


def test_filter_is_an_ewma_not_the_latest_sample() -> None:
    h = history()
    for i in range(20):
        establish(h, P1, i, 0.020)
        establish(h, P2, i, 0.040)
    # One slow sample on P1 (80 ms) moves its estimate by 1/8 only: 20 + 60/8 = 27.5 ms < 40 ms.
    h.rtt_sample(KEY, P1, 0.080, 30.0)
    assert h.snapshot(KEY, 30.0)[P1]["srtt_ms"] == pytest.approx(27.5)
    assert h.order(KEY, [P1, P2], 30.0) == [P1, P2]


def test_retransmitted_handshake_is_not_an_rtt_sample() -> None:
    h = history()
    attempt = h.attempt_started(KEY, P1, 0.0)
    h.attempt_established(attempt, 1.02, retransmitted=True)  # Karn: 1.02 s is not an RTT
    assert h.snapshot(KEY, 1.1)[P1]["srtt_ms"] is None
    assert not h.snapshot(KEY, 1.1)[P1]["suspect"]


def test_ties_keep_the_default_order() -> None:
    h = history()
    establish(h, P2, 0.0, 0.0200)
    establish(h, P1, 0.0, 0.0209)  # within max(1 ms, 10 %) of the best: a tie
    assert h.order(KEY, [P1, P2], 1.0) == [P1, P2]
    h2 = history()
    establish(h2, P2, 0.0, 0.020)
    establish(h2, P1, 0.0, 0.0225)  # 2.5 ms = 12.5 % slower: not a tie
    assert h2.order(KEY, [P1, P2], 1.0) == [P2, P1]


def test_measured_paths_before_unmeasured() -> None:
    h = history()
    establish(h, P2, 0.0, 0.040)
    assert h.order(KEY, [P1, P2], 1.0) == [P2, P1]
    assert h.has_history(KEY, [P1, P2], 1.0)


def test_unanswered_syn_marks_the_path_suspect_after_the_syn_timeout() -> None:
    h = history()
    establish(h, P1, 0.0, 0.020)
    establish(h, P2, 0.0, 0.040)
    h.attempt_started(KEY, P1, 10.0)  # never answered
    assert h.order(KEY, [P1, P2], 10.99) == [P1, P2]  # not yet: within the initial RTO
    assert h.order(KEY, [P1, P2], 11.0) == [P2, P1]
    assert h.snapshot(KEY, 11.0)[P1]["suspect"]


def test_failure_ages_out_after_the_hold_and_doubles_on_repeat() -> None:
    h = history(failure_hold_s=30.0, rate_tolerance=0.99)  # the hold alone: every rate counts as reliable
    establish(h, P1, 0.0, 0.020)
    establish(h, P2, 0.0, 0.040)
    first = h.attempt_started(KEY, P1, 10.0)
    h.attempt_failed(first, 10.5)
    assert h.order(KEY, [P1, P2], 40.4) == [P2, P1]
    assert h.order(KEY, [P1, P2], 40.5) == [P1, P2]  # hold over: P1's 20 ms estimate is kept
    probe = h.attempt_started(KEY, P1, 40.5)
    h.attempt_failed(probe, 41.0)  # a new failure: the hold doubles to 60 s
    assert h.order(KEY, [P1, P2], 100.9) == [P2, P1]
    assert h.order(KEY, [P1, P2], 101.0) == [P1, P2]


def test_attempts_in_flight_before_a_failure_do_not_double_the_hold() -> None:
    h = history(failure_hold_s=30.0, rate_tolerance=0.99)  # the hold alone: every rate counts as reliable
    establish(h, P1, 0.0, 0.020)
    early = [h.attempt_started(KEY, P1, 10.0 + i * 0.25) for i in range(4)]  # all sent before anyone knew
    for i, attempt in enumerate(early):
        h.attempt_failed(attempt, 11.0 + i * 0.25)
    assert h.snapshot(KEY, 12.0)[P1]["failures"] == 1  # no doubling ...
    assert h.order(KEY, [P1, P2], 41.7) == [P2, P1]  # ... but the hold counts from the last one's end
    assert h.order(KEY, [P1, P2], 41.75) == [P1, P2]


def test_an_unanswered_attempt_keeps_its_path_suspect_and_the_hold_counts_from_its_end() -> None:
    """Experiment 2's outage: wget waits 30 s on a connection whose SYNs go into a dead path; the next
    connection must not go into that path again because a 30 s hold from the first SYN has ended."""
    h = history(failure_hold_s=30.0, rate_tolerance=0.99)
    for t in range(20):  # a long clean history on both paths
        establish(h, P1, float(t), 0.020)
        establish(h, P2, float(t), 0.040)
    stalled = h.attempt_started(KEY, P1, 42.0)
    assert h.order(KEY, [P1, P2], 43.0) == [P2, P1]
    assert h.order(KEY, [P1, P2], 71.9) == [P2, P1]
    assert h.order(KEY, [P1, P2], 80.0) == [P2, P1]  # 38 s unanswered: still suspect
    assert h.snapshot(KEY, 80.0)[P1]["suspect"]
    assert h.trusted(KEY, [P1, P2], 80.0) == P2  # IPS+SIM would start on P2 alone
    h.attempt_dropped(stalled, 80.0)  # the client gave up on it
    assert h.snapshot(KEY, 80.0)[P1]["failures"] == 1
    assert h.order(KEY, [P1, P2], 109.9) == [P2, P1]
    assert h.order(KEY, [P1, P2], 110.0) == [P1, P2]


def test_a_kernel_that_gives_up_on_an_attempt_restarts_the_hold() -> None:
    h = history(failure_hold_s=30.0, rate_tolerance=0.99)
    establish(h, P1, 0.0, 0.020)
    establish(h, P2, 0.0, 0.040)
    stalled = h.attempt_started(KEY, P1, 20.0)  # SYNs at 20, 21, 23, 27 s; the kernel gives up at 35 s
    h.attempt_failed(stalled, 35.0)
    assert h.order(KEY, [P1, P2], 64.9) == [P2, P1]
    assert h.order(KEY, [P1, P2], 65.0) == [P1, P2]


def test_a_success_ends_the_suspicion_of_older_unanswered_attempts() -> None:
    h = history(rate_tolerance=0.99)
    establish(h, P1, 0.0, 0.020)
    establish(h, P2, 0.0, 0.040)
    older = h.attempt_started(KEY, P1, 10.0)  # a SYN lost; the kernel retransmits it later
    assert h.order(KEY, [P1, P2], 12.0) == [P2, P1]
    h.rtt_sample(KEY, P1, 0.021, 12.5)  # a join on P1 works: the path is back
    assert h.order(KEY, [P1, P2], 12.5) == [P1, P2]
    h.attempt_dropped(older, 20.0)  # that older attempt ending unanswered says nothing newer
    assert h.order(KEY, [P1, P2], 20.0) == [P1, P2]
    newer = h.attempt_started(KEY, P1, 21.0)  # but one started after the success does
    assert h.order(KEY, [P1, P2], 22.0) == [P2, P1]
    h.attempt_established(newer, 22.5, retransmitted=1)
    assert h.order(KEY, [P1, P2], 22.5)[0] == P1


def test_a_subflow_on_a_suspect_path_clears_it() -> None:
    h = history(rate_tolerance=0.99)  # the suspicion alone (the success rate: tests below)
    establish(h, P1, 0.0, 0.020)
    h.attempt_failed(h.attempt_started(KEY, P1, 5.0), 6.0)
    assert h.order(KEY, [P1, P2], 7.0) == [P2, P1]
    h.rtt_sample(KEY, P1, 0.021, 8.0)  # e.g. the path manager's join on P1 was established
    assert h.order(KEY, [P1, P2], 8.0) == [P1, P2]
    assert h.snapshot(KEY, 8.0)[P1]["failures"] == 0


def test_rtt_estimate_ages_out() -> None:
    h = history(rtt_max_age_s=60.0)
    establish(h, P2, 0.0, 0.020)
    assert h.order(KEY, [P1, P2], 59.0) == [P2, P1]
    assert h.order(KEY, [P1, P2], 61.0) == [P1, P2]  # forgotten: back to the default path
    assert not h.has_history(KEY, [P1, P2], 61.0)
    establish(h, P2, 70.0, 0.030)  # a new sample after ageing starts the filter afresh
    assert h.snapshot(KEY, 70.1)[P2]["srtt_ms"] == pytest.approx(30.0)


def test_a_path_that_disappears_is_never_returned() -> None:
    h = history()
    establish(h, P3, 0.0, 0.005)  # the best path ...
    establish(h, P1, 0.0, 0.020)
    assert h.order(KEY, [P1, P2, P3], 1.0)[0] == P3
    assert h.order(KEY, [P1, P2], 2.0) == [P1, P2]  # ... is gone (interface down)
    assert h.order(KEY, [P1, P2, P3], 3.0)[0] == P3  # and its history is kept for its return


def test_all_paths_suspect_are_ordered_by_hold_end() -> None:
    h = history(failure_hold_s=10.0)
    h.attempt_failed(h.attempt_started(KEY, P1, 0.0), 1.0)
    h.attempt_failed(h.attempt_started(KEY, P2, 0.0), 0.5)
    assert h.order(KEY, [P1, P2], 2.0) == [P2, P1]


def test_bad_inputs_are_named() -> None:
    with pytest.raises(HistoryError, match="rtt_gain"):
        HistoryConfig(rtt_gain=0)
    with pytest.raises(HistoryError, match="max_pending"):
        HistoryConfig(max_pending=0)
    with pytest.raises(HistoryError, match="duplicates"):
        PathHistory().order(KEY, [P1, P1], 0.0)
    h = PathHistory()
    with pytest.raises(HistoryError, match="rtt_s"):
        h.rtt_sample(KEY, P1, 0.0, 0.0)
    attempt = h.attempt_started(KEY, P1, 5.0)
    with pytest.raises(HistoryError, match="before the attempt started"):
        h.attempt_established(attempt, 4.0, retransmitted=False)


# -- properties ------------------------------------------------------------------------------

PATHS = [f"198.18.{i}.1" for i in range(1, 13)]
KEYS = [f"10.{i}.0.0/24" for i in range(40)]

events = st.lists(
    st.tuples(
        st.sampled_from(["start", "established", "failed", "dropped", "sample", "order"]),
        st.sampled_from(KEYS),
        st.sampled_from(PATHS),
        st.floats(min_value=0.001, max_value=2.0),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(events, st.lists(st.sampled_from(PATHS), min_size=1, max_size=6, unique=True))
def test_property_order_is_a_permutation_and_memory_is_bounded(
    ops: list[tuple[str, str, str, float]], query: list[str]
) -> None:
    config = HistoryConfig(max_destinations=8, max_paths_per_destination=3, max_pending=5)
    h = PathHistory(config)
    now = 0.0
    pending: list[Attempt] = []
    for op, key, path, value in ops:
        now += value
        if op == "start" or not pending:
            pending.append(h.attempt_started(key, path, now))
        elif op == "established":
            h.attempt_established(pending.pop(0), now, retransmitted=int(value * 2))
        elif op == "failed":
            h.attempt_failed(pending.pop(0), now)
        elif op == "dropped":
            h.attempt_dropped(pending.pop(), now)
        elif op == "sample":
            h.rtt_sample(key, path, value, now, retransmits=int(value * 2) if value > 1.0 else None)
        else:
            assert sorted(h.order(key, query, now)) == sorted(query)
        dests, paths, in_flight = h.size()
        assert dests <= 8 and paths <= 8 * 3 and in_flight <= 8 * 5
    for key in KEYS:
        assert sorted(h.order(key, query, now)) == sorted(query)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=1.0), min_size=1, max_size=50))
def test_property_filtered_rtt_stays_within_the_samples(samples: list[float]) -> None:
    h = PathHistory()
    for i, rtt in enumerate(samples):
        h.rtt_sample(KEY, P1, rtt, float(i))
    srtt = h.snapshot(KEY, float(len(samples)))[P1]["srtt_ms"]
    assert isinstance(srtt, float)
    assert min(samples) * 1e3 - 1e-3 <= srtt <= max(samples) * 1e3 + 1e-3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(PATHS), min_size=1, max_size=6, unique=True), st.floats(0, 1e6))
def test_property_without_history_the_default_order_is_kept(paths: list[str], now: float) -> None:
    h = PathHistory()
    h.rtt_sample("10.99.0.0/24", paths[-1], 0.001, now)  # another destination's history
    assert h.order(KEY, paths, now) == paths


def test_an_attempt_overtaken_by_a_later_one_marks_its_path():
    h = history()
    establish(h, P1, 0.0, 0.020)
    first = h.attempt_started(KEY, P1, 10.0)
    later = h.attempt_started(KEY, P2, 10.5)  # a timer of 0.5 s: shorter than the SYN timeout
    h.attempt_established(later, 10.54, retransmitted=False)
    h.attempt_dropped(first, 10.54, overtaken=True)
    assert h.order(KEY, [P1, P2], 10.6) == [P2, P1]
    sim_loser = h.attempt_started(KEY, P2, 20.0)
    h.attempt_dropped(sim_loser, 20.02)  # lost a race started at the same time: no evidence
    assert not h.snapshot(KEY, 20.1)[P2]["suspect"]


# -- the set-up success rate -----------------------------------------------------------------


def outcome(h: PathHistory, path: str, start: float, retransmits: int | None, rtt: float = 0.020) -> None:
    """One attempt on ``path``: established after ``retransmits`` SYN retransmissions, or failed (None)."""
    attempt = h.attempt_started(KEY, path, start)
    if retransmits is None:
        h.attempt_failed(attempt, start + 15.0)
    else:
        h.attempt_established(attempt, start + rtt + retransmits, retransmitted=retransmits)


def rate(h: PathHistory, path: str, now: float) -> float | None:
    value = h.snapshot(KEY, now)[path]["success_rate"]
    assert value is None or isinstance(value, float)
    return value


def test_a_lossy_default_path_loses_to_an_equally_fast_clean_one() -> None:
    h = history()
    establish(h, P1, 0.0, 0.020)
    establish(h, P2, 0.0, 0.020)
    assert h.order(KEY, [P1, P2], 1.0) == [P1, P2]  # equal rates and RTTs: the default path
    outcome(h, P1, 1.0, retransmits=1)  # the SYN was retransmitted once: outcome 0.5
    # P1: (1 + 0.5 + 0.5 prior) / (2 + 0.5) = 0.8 < 1 - 0.1: lossy, although it set up and is not suspect.
    assert rate(h, P1, 3.0) == pytest.approx(0.8, abs=0.005)
    assert not h.snapshot(KEY, 3.0)[P1]["suspect"]
    assert h.order(KEY, [P1, P2], 3.0) == [P2, P1]
    assert h.trusted(KEY, [P1, P2], 3.0) == P2


def test_success_goes_before_rtt_and_rtt_decides_among_reliable_paths() -> None:
    h = history()
    for i in range(5):
        establish(h, P1, float(i), 0.020)
        establish(h, P2, float(i), 0.040)
    assert h.order(KEY, [P1, P2], 5.0) == [P1, P2]  # both reliable: the faster first
    outcome(h, P1, 5.0, retransmits=2)
    outcome(h, P1, 6.0, retransmits=None)
    assert h.order(KEY, [P1, P2], 40.0) == [P2, P1]  # a slower path that sets up beats a faster lossy one
    h2 = history()
    for i in range(9):
        establish(h2, P1, float(i), 0.020)
        establish(h2, P2, float(i), 0.040)
    outcome(h2, P1, 9.0, retransmits=1)  # one partial failure among ten: within the tolerance
    assert rate(h2, P1, 12.0) is not None and rate(h2, P1, 12.0) >= 0.9  # type: ignore[operator]
    assert h2.order(KEY, [P1, P2], 12.0) == [P1, P2]


def test_ties_in_rate_keep_the_rtt_order_and_lossy_paths_go_by_rate() -> None:
    h = history()
    for path, retransmits in ((P1, 1), (P2, 3), (P3, 1)):
        outcome(h, path, 0.0, retransmits)
    # All lossy against none clean, so all within the tolerance of the best (P1 = P3): default order.
    assert h.order(KEY, [P1, P2, P3], 5.0) == [P1, P3, P2]
    h.rtt_sample(KEY, P3, 0.005, 5.0)  # an RTT sample without outcome: P3 measured and faster
    assert h.order(KEY, [P1, P2, P3], 5.0)[0] == P3


def test_an_untried_path_is_tried_before_a_lossy_one_but_not_before_a_clean_one() -> None:
    h = history()
    establish(h, P1, 0.0, 0.020)
    assert h.order(KEY, [P1, P2], 1.0) == [P1, P2]  # P2 unknown (presumed reliable), P1 measured
    outcome(h, P1, 1.0, retransmits=None)
    outcome(h, P1, 20.0, retransmits=2)
    assert h.order(KEY, [P1, P2], 25.0) == [P2, P1]
    assert h.trusted(KEY, [P1, P2], 25.0) is None  # the best path has no outcome yet: SIM for IPS+SIM


def test_lossy_and_dead_paths_rank_differently() -> None:
    h = history(failure_hold_s=30.0)
    outcome(h, P1, 0.0, retransmits=2)  # lossy: sets up, slowly
    h.attempt_started(KEY, P2, 0.0)  # dead: never answers
    assert h.order(KEY, [P1, P2, P3], 2.0) == [P3, P1, P2]  # untried, lossy, suspect
    assert h.snapshot(KEY, 2.0)[P2]["suspect"] and not h.snapshot(KEY, 2.0)[P1]["suspect"]
    assert rate(h, P2, 2.0) is None  # judged suspect, but its outcome waits for the attempt's end


def test_the_success_rate_ages_towards_reliable() -> None:
    h = history(success_half_life_s=120.0)
    establish(h, P2, 0.0, 0.020)
    outcome(h, P1, 0.0, retransmits=None)  # one failure: rate 0.5 / 1.5 = 0.33
    assert rate(h, P1, 15.0) == pytest.approx(0.5 / 1.5, abs=1e-3)
    h.rtt_sample(KEY, P2, 0.020, 400.0)
    assert h.order(KEY, [P1, P2], 400.0) == [P2, P1]
    # 2 ** (-t / 120) * 1 <= 0.5 / 9: t >= 120 * log2(18) = 500 s after the outcome (at 15 s).
    assert rate(h, P1, 510.0) < 0.9 < rate(h, P1, 520.0)  # type: ignore[operator]
    h.rtt_sample(KEY, P1, 0.020, 520.0)  # e.g. a join: an RTT, no outcome
    assert h.order(KEY, [P1, P2], 520.0) == [P1, P2]  # tried again: reliable again, equal RTT, default


def test_newer_outcomes_count_more() -> None:
    h = history(success_half_life_s=10.0)
    for i in range(4):
        outcome(h, P1, float(i), retransmits=None)
    outcome(h, P1, 100.0, retransmits=0)  # 10 half-lives later: the failures weigh 4/1024
    assert rate(h, P1, 100.1) == pytest.approx(1.0, abs=0.01)


def test_an_overtaken_or_unanswered_loser_is_an_outcome_but_a_sim_loser_is_not() -> None:
    h = history()
    sim_loser = h.attempt_started(KEY, P1, 0.0)
    h.attempt_dropped(sim_loser, 0.02)
    assert P1 not in h.snapshot(KEY, 0.1) or rate(h, P1, 0.1) is None
    unanswered = h.attempt_started(KEY, P1, 1.0)
    h.order(KEY, [P1, P2], 2.5)  # judged at 2.0 s
    h.attempt_dropped(unanswered, 2.5)
    assert rate(h, P1, 2.5) == pytest.approx(0.5 / 1.5, abs=1e-3)


def test_a_path_with_bad_history_that_disappears_is_never_returned() -> None:
    h = history()
    outcome(h, P3, 0.0, retransmits=None)
    establish(h, P1, 0.0, 0.020)
    assert h.order(KEY, [P1, P2], 20.0) == [P1, P2]
    assert h.order(KEY, [P1, P2, P3], 20.0) == [P1, P2, P3]
    assert h.trusted(KEY, [], 20.0) is None


def test_bad_success_settings_are_named() -> None:
    with pytest.raises(HistoryError, match="rate_tolerance"):
        HistoryConfig(rate_tolerance=1.0)
    with pytest.raises(HistoryError, match="success_half_life_s"):
        HistoryConfig(success_half_life_s=0)
    with pytest.raises(HistoryError, match="success_prior_weight"):
        HistoryConfig(success_prior_weight=0)
    h = PathHistory()
    with pytest.raises(HistoryError, match="retransmits"):
        h.rtt_sample(KEY, P1, 0.02, 0.0, retransmits=-1)
    with pytest.raises(HistoryError, match="retransmitted"):
        h.attempt_established(h.attempt_started(KEY, P1, 0.0), 0.1, retransmitted=-1)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 6)), st.floats(0.0, 300.0)), min_size=1, max_size=40))
def test_property_rate_is_within_the_outcomes_and_the_prior(ops: list[tuple[int | None, float]]) -> None:
    h = history()
    now = 0.0
    values = []
    for retransmits, gap in ops:
        now += gap
        outcome(h, P1, now, retransmits)
        values.append(0.0 if retransmits is None else 1.0 / (1 + retransmits))
    value = rate(h, P1, now + 15.0)
    assert value is not None
    assert min(values) - 1e-9 <= value <= 1.0 + 1e-9  # a weighted mean of the outcomes and the prior 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([P1, P2, P3]), st.one_of(st.none(), st.integers(0, 3))), max_size=30))
def test_property_a_clean_path_is_never_behind_a_path_with_a_lower_rate(ops: list[tuple[str, int | None]]) -> None:
    h = history(failure_hold_s=0.001)  # holds over at once: the rates alone
    for i, (path, retransmits) in enumerate(ops):
        outcome(h, path, float(i), retransmits)
    now = len(ops) + 20.0
    ranked = h.order(KEY, [P1, P2, P3], now)
    rates = {p: (rate(h, p, now) if p in h.snapshot(KEY, now) else None) for p in (P1, P2, P3)}
    presumed = {p: 1.0 if r is None else r for p, r in rates.items()}
    for earlier, later in itertools.pairwise(ranked):
        assert presumed[earlier] >= presumed[later] - 0.1 - 1e-3  # reliable tier first, then by rate
