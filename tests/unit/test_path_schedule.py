"""Paths that change over time: schedules, the outage profile, the time-varying run's rows."""

import pytest

from analysis.schema import EXPERIMENT1
from experiments.experiment1 import build_row
from experiments.path_schedule import PathChange, PathState, ScheduleError, Timeline, parse_changes
from experiments.profile import ProfileError, expand_runs, load_profile, parse_profile
from experiments.timevarying import timeline_row
from robe.client import ConnectionEvent, ConnectionRecord, SubflowSeen

OUTAGE = [{"at_s": 20, "path": 1, "loss_pct": 100}, {"at_s": 50, "path": 1, "loss_pct": 0}]


def _timeline(changes=OUTAGE, duration=80.0, interval=1.0) -> Timeline:
    return Timeline(parse_changes(changes), duration, interval, (PathState(0, 20), PathState(0, 40)))


def test_state_follows_the_schedule_per_path():
    timeline = _timeline([*OUTAGE, {"at_s": 30, "path": 2, "loss_pct": 5, "rtt_ms": 80}])
    assert timeline.state_at(1, 19.99) == PathState(0, 20)
    assert timeline.state_at(1, 20.0) == PathState(100, 20)
    assert timeline.state_at(1, 50.0) == PathState(0, 20)
    assert timeline.state_at(2, 29.0) == PathState(0, 40)
    assert timeline.state_at(2, 31.0) == PathState(5, 80)
    assert timeline.windows(1) == [(20, 50)]
    assert timeline.windows(2) == []
    assert _timeline([{"at_s": 70, "path": 1, "loss_pct": 100}]).windows(1) == [(70, 80.0)]


def test_attempts_are_at_a_fixed_rate_and_interleaved():
    times = _timeline([], duration=3.0, interval=1.0).attempt_times(2)
    assert times == [[0.0, 1.0, 2.0], [0.5, 1.5, 2.5]]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ([{"at_s": -1, "path": 1, "loss_pct": 0}], "at_s"),
        ([{"at_s": 1, "path": 3, "loss_pct": 0}], "path"),
        ([{"at_s": 1, "path": 1, "loss_pct": 101}], "loss_pct"),
        ([{"at_s": 1, "path": 1, "loss_pct": 1, "jitter": 2}], r"schedule\[0\].jitter: unknown"),
        ([{"at_s": 1, "path": 1, "loss_pct": 1}, {"at_s": 1, "path": 1, "loss_pct": 2}], "same time"),
        ("no", "list of tables"),
    ],
)
def test_bad_schedules_are_named(changes, message):
    with pytest.raises(ScheduleError, match=message):
        parse_changes(changes)


def test_changes_after_the_end_and_bad_rates_are_refused():
    with pytest.raises(ScheduleError, match="not before duration_s"):
        _timeline([{"at_s": 90, "path": 1, "loss_pct": 100}])
    with pytest.raises(ScheduleError, match="interval_s"):
        _timeline(interval=0.01)
    assert PathChange(1, 1, 0).rtt_ms is None


def test_outage_profile_and_its_runs():
    profile = load_profile("outage")
    timeline = profile.timeline()
    assert timeline is not None and timeline.windows(1) == [(20, 50)]
    runs = expand_runs(profile)
    assert len(runs) == profile.repetitions * len(profile.strategies) * 80
    assert len({r.run_id for r in runs}) == len(runs)
    starts = [(r.repetition, r.start_s) for r in runs]
    assert starts == sorted(starts)  # in start order, repetition after repetition
    assert {r.seed for r in runs if r.repetition == 0} == {runs[0].seed}
    assert "schedule" in profile.to_dict()
    assert "schedule" not in load_profile("paper").to_dict()  # loss sweeps keep their fingerprint


def test_a_schedule_needs_its_rate_and_one_start_level():
    base = {"name": "t", "strategies": ["mptcp"], "loss_pct": [0], "schedule": OUTAGE}
    with pytest.raises(ProfileError, match="duration_s and interval_s"):
        parse_profile(dict(base))
    with pytest.raises(ProfileError, match="one level"):
        parse_profile({**base, "loss_pct": [0, 10], "duration_s": 60, "interval_s": 1})
    with pytest.raises(ProfileError, match=r"schedule\[1\]"):
        parse_profile({**base, "duration_s": 60, "interval_s": 1,
                       "schedule": [OUTAGE[0], {"at_s": 5, "path": 9, "loss_pct": 0}]})  # fmt: skip


def test_timeline_row_records_when_the_attempt_started():
    profile = load_profile("outage")
    timeline = profile.timeline()
    assert timeline is not None
    spec = next(r for r in expand_runs(profile) if r.start_s and r.start_s > 25)
    steps = [ConnectionEvent(10**9, event) for event in ("attempt", "attempt", "winner", "reset")]
    client = ConnectionRecord("c", spec.strategy, "s", ["a", "b"], status="failed", ips_mode="ips", path_order=[1, 0],
                              connect_ns=10**9 + int((spec.start_s or 0) * 1e9) + 2_000_000, events=steps,
                              subflows=[SubflowSeen(10**9, "a", "s"), SubflowSeen(10**9, "b", "s")])  # fmt: skip
    row = timeline_row(build_row(spec, 0, "", client, None, 0), client, spec, 10**9, timeline)
    assert float(row["attempt_start_s"]) == pytest.approx((spec.start_s or 0) + 0.002, abs=1e-4)
    assert row["path1_loss_at_start"] == "100" and row["path_order"] == "2;1" and row["ips_mode"] == "ips"
    assert (row["attempts"], row["resets_sent"], row["subflows_end"]) == (2, 1, 2)
    EXPERIMENT1.format_row(row)  # the row the runner writes is a valid experiment 1 row
