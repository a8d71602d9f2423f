"""Experiment 2 with paths that change over time, its pure parts: the profile's schedule, the plan of
passes and due loads, skipping due times a stalled load ran past, the rows' time columns, the
schedule player (with a recording callback), and the HAAP's losers count."""

import json
import threading
import time

import pytest

from experiments.metadata import PROJECT_ROOT
from experiments.path_schedule import PathState
from experiments.profile import ProfileError
from experiments.profile2 import load_profile2, parse_profile2
from experiments.schedule_player import SchedulePlayer, sleep_until
from experiments.timevarying2 import START_SLACK_S, Pass, next_tick, plan_passes, plan_ticks, timeline_columns
from robe.proxy.haap import losers_accepted

BASE = {"name": "t", "corpus": "har", "sites": ["twitter.com", "baidu.com"], "strategies": ["mptcp", "robe-ips"],
        "repetitions": 2, "duration_s": 12, "interval_s": 3.0,
        "schedule": [{"at_s": 6, "path": 1, "loss_pct": 0}, {"at_s": 3, "path": 1, "loss_pct": 100}]}  # fmt: skip


def test_the_outage_profile_has_both_outages_and_older_profiles_keep_their_fingerprint():
    profile = load_profile2("outage")
    timeline = profile.timeline()
    assert timeline is not None and timeline.windows(1) == [(10, 30)] and timeline.windows(2) == [(40, 100)]
    down = profile.path_config(2, timeline.state_at(2, 50))
    assert down.loss_pct == 100 and down.loss_direction == "both" and down.rtt_ms == profile.dsl.rtt_ms
    assert profile.dns == "local-cache"
    paper = load_profile2("paper")
    assert paper.timeline() is None and "schedule" not in paper.to_dict()
    ips = load_profile2("ips")
    stored = json.loads((PROJECT_ROOT / "results" / "experiment2" / "ips" / "metadata.json").read_text())
    assert ips.fingerprint() == stored["profile_fingerprint"]  # a stored folder still resumes


def test_a_schedule_is_sorted_and_bad_ones_name_their_field():
    profile = parse_profile2(dict(BASE))
    assert [c.at_s for c in profile.schedule] == [3, 6]
    with pytest.raises(ProfileError, match="needs duration_s and interval_s"):
        parse_profile2({k: v for k, v in BASE.items() if k != "interval_s"})
    with pytest.raises(ProfileError, match=r"schedule\[0\]: schedule.path=3"):
        parse_profile2({**BASE, "schedule": [{"at_s": 1, "path": 3, "loss_pct": 0}]})
    with pytest.raises(ProfileError, match="kernel strategies only"):
        parse_profile2({**BASE, "strategies": ["mptcp", "robe-downgrade"]})
    with pytest.raises(ProfileError, match="with wget"):
        parse_profile2({**BASE, "client": "chromium"})


def test_passes_and_due_loads():
    profile = parse_profile2(dict(BASE))
    timeline = profile.timeline()
    assert timeline is not None
    ticks = plan_ticks(timeline, profile.sites)
    assert [(t.due_s, t.site) for t in ticks] == [(0.0, "twitter.com"), (3.0, "baidu.com"), (6.0, "twitter.com"),
                                                  (9.0, "baidu.com")]  # fmt: skip
    passes = plan_passes(profile)
    assert [p.key for p in passes] == ["mptcp-r00", "robe-ips-r00", "mptcp-r01", "robe-ips-r01"]
    assert Pass(1, "robe-ips").run_id(ticks[2]) == "robe-ips-r01-t002-twitter.com"
    columns = timeline_columns(timeline, ticks[1], 3.2)
    assert columns == {"load_start_s": "3.2000", "due_s": "3.0000", "path1_loss_at_start": "100",
                       "path2_loss_at_start": "0"}  # fmt: skip


def test_due_times_a_load_ran_past_are_skipped():
    timeline = parse_profile2(dict(BASE)).timeline()
    assert timeline is not None
    ticks = plan_ticks(timeline, ("twitter.com", "baidu.com"))  # due at 0, 3, 6, 9 s
    assert next_tick(ticks, 0, 0.0) == (0, 0)
    assert next_tick(ticks, 1, 3.0 + START_SLACK_S) == (1, 0)  # a little late still starts
    assert next_tick(ticks, 1, 7.0) == (3, 2)  # the load took until 7 s: 3 s and 6 s are skipped
    assert next_tick(ticks, 1, 20.0) == (None, 3)


def test_the_player_applies_each_change_in_time_and_resets_the_paths():
    profile = parse_profile2({**BASE, "duration_s": 1, "interval_s": 0.5,
                              "schedule": [{"at_s": 0.1, "path": 2, "loss_pct": 100},
                                           {"at_s": 0.2, "path": 2, "loss_pct": 0}]})  # fmt: skip
    timeline = profile.timeline()
    assert timeline is not None
    seen: list[tuple[int, PathState]] = []
    lock = threading.Lock()

    def apply(path: int, state: PathState) -> None:
        with lock:
            seen.append((path, state))

    with SchedulePlayer(timeline, apply) as player:
        sleep_until(player.t0_ns + int(0.5e9), threading.Event())
        assert [(path, state.loss_pct) for path, state in seen] == [(1, 0), (2, 0), (2, 100), (2, 0)]
        assert all(late >= 0 for late, _, _ in player.applied)
    assert [(path, state.loss_pct) for path, state in seen[-2:]] == [(1, 0), (2, 0)]  # back to t = 0


def test_a_failing_change_is_reported_when_the_player_stops():
    profile = parse_profile2({**BASE, "duration_s": 1, "interval_s": 0.5,
                              "schedule": [{"at_s": 0.05, "path": 1, "loss_pct": 100}]})  # fmt: skip
    assert profile.timeline() is not None
    calls = []

    def apply(path: int, state: PathState) -> None:
        calls.append(path)
        if state.loss_pct == 100:
            raise OSError("tc failed")

    timeline = profile.timeline()
    assert timeline is not None
    player = SchedulePlayer(timeline, apply)
    player.start()
    time.sleep(0.2)
    with pytest.raises(RuntimeError, match="tc failed"):
        player.stop()
    assert calls[-2:] == [1, 2]  # the paths were put back all the same


def test_losers_accepted_counts_the_haaps_connections_that_ended_before_a_header():
    events: list[dict[str, str | None]] = [
        {"event": "accepted", "conn": "h1"},
        {"event": "closed", "conn": "h1", "error": "reset before any header byte (a losing attempt)"},
        {"event": "closed", "conn": "h2", "error": None, "dst": "198.19.0.1:443"},
        {"event": "refused", "conn": "h3", "reason": "closed after 3 bytes, before a complete header"},
        {"event": "closed", "conn": "h3", "error": "refused: closed after 3 bytes, before a complete header"},
        {"event": "closed", "conn": "h4", "error": "ended before any header byte (a losing attempt)"},
    ]
    assert losers_accepted(events) == 2
    assert losers_accepted([]) == 0
