"""Experiment profiles: parsing, validation with clear messages, run expansion."""

import pytest

from experiments.profile import ProfileError, expand_runs, load_profile, parse_profile

BASE = {"name": "t", "strategies": ["mptcp", "robe-sim"], "loss_pct": [0, 50], "repetitions": 2}


def test_shipped_profiles_load():
    paper = load_profile("paper")
    assert paper.loss_pct == tuple(range(0, 101, 10))
    assert paper.repetitions == 30 and paper.loss_direction == "up"
    assert {"mptcp", "robe-sim", "tcp", "robe-timer"} == set(paper.strategies)
    assert len(expand_runs(paper)) == 11 * 4 * 30
    quick = load_profile("quick")
    assert quick.repetitions == 3 and len(quick.loss_pct) <= 4
    asym = load_profile("asymmetric")
    assert (asym.path1.rtt_ms, asym.path2.rtt_ms) == (40, 20)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"strategies": ["mptcp", "quic"]}, "unknown strategy 'quic'"),
        ({"loss_pct": [0, 120]}, "120 is outside 0..100"),
        ({"loss_pct": [-1]}, "-1 is outside 0..100"),
        ({"repetitions": 0}, "repetitions=0"),
        ({"loss_direction": "sideways"}, "loss_direction='sideways'"),
        ({"order": "shuffled"}, "order='shuffled'"),
        ({"timer_s": 0}, "timer_s=0"),
        ({"path1": {"rtt_ms": -5}}, r"path1\.rtt_ms=-5"),
        ({"path2": {"latency": 5}}, r"path2\.latency: unknown field"),
        ({"bogus": 1}, "bogus: unknown field"),
    ],
)
def test_bad_profiles_name_field_and_value(change, needle):
    with pytest.raises(ProfileError, match=needle):
        parse_profile({**BASE, **change})


def test_missing_required_field():
    with pytest.raises(ProfileError, match="loss_pct: required"):
        parse_profile({"name": "x", "strategies": ["tcp"]})


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ProfileError, match=r"no such profile.*paper"):
        load_profile("nope")


def test_runs_have_stable_ids_and_seeds_and_seeded_random_order():
    profile = parse_profile({**BASE, "seed": 3})
    runs = expand_runs(profile)
    assert len(runs) == 2 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    again = expand_runs(parse_profile({**BASE, "seed": 3}))
    assert runs == again
    other = expand_runs(parse_profile({**BASE, "seed": 4}))
    assert sorted(r.run_id for r in other) == sorted(r.run_id for r in runs)
    sequential = expand_runs(parse_profile({**BASE, "order": "sequential"}))
    assert [r.run_id for r in sequential][:2] == ["mptcp-L0-r00", "mptcp-L0-r01"]


def test_fingerprint_tracks_conditions():
    a = parse_profile(BASE)
    b = parse_profile({**BASE, "path1": {"rtt_ms": 40}})
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == parse_profile(BASE).fingerprint()
