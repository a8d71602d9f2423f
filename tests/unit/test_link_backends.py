"""Backend selection and the netem command builders (no root needed)."""

import pytest

from topologies.linkparams import DirectionParams, LinkConfigError
from topologies.links import (
    Backend,
    choose_backend,
    netem_arguments,
    netem_limit,
    netem_probe_commands,
    netem_qdisc_command,
    parse_backend_setting,
    tapwire_command,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("auto", None), ("netem", Backend.NETEM), ("USERSPACE", Backend.USERSPACE)],
)
def test_parse_backend_setting(value, expected):
    assert parse_backend_setting(value) is expected


def test_unknown_backend_names_value_and_choices():
    with pytest.raises(LinkConfigError, match=r"LINK_BACKEND='tclink'.*auto, netem, userspace"):
        parse_backend_setting("tclink")
    with pytest.raises(LinkConfigError, match="LINK_BACKEND='bogus'"):
        choose_backend("bogus")


def test_forced_userspace_skips_probe():
    choice = choose_backend("userspace")
    assert choice.backend is Backend.USERSPACE
    assert choice.netem_probe == "not run"


def test_netem_arguments_full():
    params = DirectionParams(delay_ms=20, jitter_ms=2, loss_pct=10, rate_mbit=10, queue_packets=100)
    args = netem_arguments(params)
    # Our jitter is [delay, delay + jitter]; netem's is centred, so the centre moves by jitter / 2.
    assert args[:3] == ["delay", "21ms", "1ms"]
    assert args[3:6] == ["loss", "random", "10%"]
    assert args[6:8] == ["rate", "10000kbit"]
    assert args[8] == "limit" and int(args[9]) == netem_limit(params)


def test_netem_arguments_omit_zero_loss_and_unlimited_rate():
    args = netem_arguments(DirectionParams(delay_ms=5))
    assert "loss" not in args and "rate" not in args
    assert args[:2] == ["delay", "5ms"]


def test_netem_limit_covers_queue_plus_delay_line():
    params = DirectionParams(delay_ms=20, rate_mbit=10, queue_packets=100)
    # 10 Mbit/s * 20 ms = 25 kB = 16.7 MTU frames in flight; twice that on top of the queue.
    assert netem_limit(params) == 100 + 2 * 16 + 1


def test_netem_qdisc_command_targets_interface_root():
    cmd = netem_qdisc_command("a1", DirectionParams(delay_ms=1))
    assert cmd[:7] == ["tc", "qdisc", "replace", "dev", "a1", "root", "netem"]


def test_probe_commands_stay_in_scratch_namespace():
    cmds = netem_probe_commands("rl-probe-x")
    assert cmds[0] == ["ip", "netns", "add", "rl-probe-x"]
    assert all("rl-probe-x" in cmd for cmd in cmds)


def test_tapwire_command_carries_tag_and_namespaces():
    cmd = tapwire_command(
        tag="rl-ab-p1", a_netns="/proc/1/ns/net", a_name="a1", b_netns="/proc/2/ns/net", b_name="r-a1", seed=7
    )
    assert cmd[1:3] == ["-m", "topologies.tapwire"]
    pairs = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert pairs == {
        "--tag": "rl-ab-p1",
        "--a-netns": "/proc/1/ns/net",
        "--a-name": "a1",
        "--b-netns": "/proc/2/ns/net",
        "--b-name": "r-a1",
        "--mtu": "1500",
        "--seed": "7",
    }
