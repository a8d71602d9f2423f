"""Profiles checked against their dataclasses (robe_lab.typedconfig): one line per error naming the
field, the value and what is expected; exit status 2 without a traceback; nothing created first."""

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from experiments.profile import ProfileError, parse_profile
from experiments.profile2 import parse_profile2
from robe_lab.paths import project_root
from robe_lab.typedconfig import ConfigError, bounds, build, choices

BASE1 = {"name": "t", "strategies": ["mptcp", "robe-sim"], "loss_pct": [0, 50], "repetitions": 2}
BASE2 = {"name": "t", "corpus": "har", "sites": ["google.com"], "strategies": ["mptcp"]}


# The list, one by one (experiment 1 profiles).
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"loss_pct": 50}, "loss_pct=50: expected a list of numbers, e.g. [50]"),
        ({"strategies": "mptcp"}, "strategies='mptcp': expected a list of strings, e.g. ['mptcp']"),
        ({"timer_s": "1"}, "timer_s='1': expected a number"),
        ({"seed": "abc"}, "seed='abc': expected a whole number"),
        ({"hold_ms": True}, "hold_ms=true: expected a whole number"),
        ({"tcp_syn_retries": 2.5}, "tcp_syn_retries=2.5: expected a whole number"),
        ({"seed": -1}, "seed=-1: expected a whole number within [0, 4294967295]"),
        ({"loss_pct": [0, "10"]}, "loss_pct[1]='10': expected a number"),
        ({"paired_seeds": 1}, "paired_seeds=1: expected true or false"),
        ({"path1": 5}, "path1=5: expected a table with keys rtt_ms, rate_mbit, queue_packets"),
        ({"path1": {"queue_packets": 1.5}}, "path1.queue_packets=1.5: expected a whole number"),
        ({"strategies": ["mptpc"]}, "unknown strategy 'mptpc' (did you mean 'mptcp'?)"),
    ],
)
def test_experiment1_profile_errors(change, message):
    with pytest.raises(ProfileError) as caught:
        parse_profile({**BASE1, **change}, "p.toml")
    text = str(caught.value)
    assert text == f"p.toml: {message}" or (text.startswith("p.toml: strategies: ") and message in text)
    assert "\n" not in text


def test_unknown_nested_key_gets_a_suggestion_and_the_valid_keys():
    with pytest.raises(ProfileError) as caught:
        parse_profile({**BASE1, "path1": {"rtt": 30}}, "p.toml")
    assert str(caught.value) == ("p.toml: path1.rtt: unknown field (did you mean 'rtt_ms'?); "
                                 "valid fields of [path1]: rtt_ms, rate_mbit, queue_packets")  # fmt: skip


def test_unknown_top_level_key_gets_a_suggestion():
    with pytest.raises(ProfileError, match=r"repetitons: unknown field \(did you mean 'repetitions'\?\)"):
        parse_profile({**BASE1, "repetitons": 3})


def test_missing_field_says_what_is_expected():
    with pytest.raises(ProfileError, match=r"loss_pct: required, a list of numbers \(missing\)"):
        parse_profile({"name": "x", "strategies": ["tcp"]})


def test_experiment2_profile_errors():
    for change, message in (
        ({"sites": "google.com"}, "sites='google.com': expected a list of strings"),
        ({"load_timeout_s": "60"}, "load_timeout_s='60': expected a number"),
        ({"lte_backup": "yes"}, "lte_backup='yes': expected true or false"),
        ({"lte": {"rtt": 40}}, "lte.rtt: unknown field (did you mean 'rtt_ms'?); valid fields of [lte]"),
        ({"sites": ["gogle.com"]}, "sites[0]='gogle.com': no such har site (did you mean 'google.com'?)"),
        ({"corpus": "synthetic", "sites": ["30 x 1k"]}, "sites[0]='30 x 1k': no such synthetic site"),
    ):
        with pytest.raises(ProfileError) as caught:
            parse_profile2({**BASE2, **change}, "p.toml")
        assert message in str(caught.value), (change, str(caught.value))


def _run(module, profile, tmp_path, *extra):
    return subprocess.run([sys.executable, "-m", module, "--profile", str(profile), *extra], capture_output=True,
                          text=True, cwd=project_root(), timeout=60, check=False)  # fmt: skip


def test_bad_profile_exits_2_with_one_line(tmp_path):
    profile = tmp_path / "bad.toml"
    profile.write_text('name = "bad"\nstrategies = "mptcp"\nloss_pct = [0]\n')
    done = _run("experiments.experiment1", profile, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m experiments.experiment1: error: {profile}: strategies='mptcp': expected a list of strings, "
        "e.g. ['mptcp']"
    ]


def test_misspelt_site_stops_before_the_results_folder_exists(tmp_path):
    profile = tmp_path / "bad2.toml"
    profile.write_text('name = "bad2"\ncorpus = "har"\nsites = ["google.con"]\nstrategies = ["mptcp"]\n')
    out = tmp_path / "out"
    done = _run("experiments.experiment2", profile, tmp_path, "--out", str(out))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "did you mean 'google.com'?" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


# The validator is generic: fields a dataclass gains are checked without a schema elsewhere.
@dataclass(frozen=True)
class Inner:
    rate: float | None = 10.0


@dataclass(frozen=True)
class Example:
    name: str
    mode: Literal["fast", "slow"] = "fast"
    colour: str = field(default="red", metadata=choices("red", "green"))
    weight: float = field(default=1.0, metadata=bounds(0, 5, low_open=True))
    counts: tuple[int, ...] = ()
    inner: Inner = field(default_factory=Inner)


def test_generic_validator_follows_the_annotations():
    built = build(Example, {"name": "x", "counts": [1, 2], "inner": {"rate": 5}, "weight": 5})
    assert built == Example("x", counts=(1, 2), inner=Inner(5), weight=5)
    assert isinstance(built.weight, int)  # kept as written: fingerprints of stored profiles stay
    for data, message in (
        ({"name": 1}, "name=1: expected a string"),
        ({"name": "x", "mode": "fats"}, "mode='fats': expected one of fast, slow (did you mean 'fast'?)"),
        ({"name": "x", "colour": "blue"}, "colour='blue': expected one of red, green"),
        ({"name": "x", "weight": 0}, "weight=0: expected a number within (0, 5]"),
        ({"name": "x", "counts": [1, True]}, "counts[1]=true: expected a whole number"),
        ({"name": "x", "inner": {"rate": "fast"}}, "inner.rate='fast': expected a number"),
        (
            {"name": "x", "inner": {"rates": 1}},
            "inner.rates: unknown field (did you mean 'rate'?); valid fields of [inner]: rate",
        ),
    ):
        with pytest.raises(ConfigError) as caught:
            build(Example, data)
        assert str(caught.value) == message
