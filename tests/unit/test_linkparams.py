"""Validation of link parameters: bad values give errors naming the field and the value."""

import pytest

from topologies.linkparams import DirectionParams, LinkConfigError, LinkParams


def test_loss_above_100_names_field_and_value():
    with pytest.raises(LinkConfigError, match=r"loss_pct=120.*0\.\.100"):
        DirectionParams(loss_pct=120)


def test_negative_delay_names_field_and_value():
    with pytest.raises(LinkConfigError, match=r"delay_ms=-5"):
        DirectionParams(delay_ms=-5)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"rate_mbit": 0}, "rate_mbit=0"),
        ({"queue_packets": 0}, "queue_packets=0"),
        ({"queue_packets": 2.5}, "queue_packets=2.5"),
        ({"jitter_ms": float("nan")}, "jitter_ms=nan"),
        ({"loss_pct": "10"}, "loss_pct='10'"),
        ({"delay_ms": True}, "delay_ms=True"),
    ],
)
def test_other_bad_values(kwargs, needle):
    with pytest.raises(LinkConfigError, match=needle.replace(".", r"\.")):
        DirectionParams(**kwargs)


def test_from_dict_prefixes_direction_in_errors():
    with pytest.raises(LinkConfigError, match=r"path1\.a_to_b\.loss_pct=150"):
        LinkParams.from_dict({"a_to_b": {"loss_pct": 150}}, "path1.")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(LinkConfigError, match="delay:"):
        LinkParams.from_dict({"a_to_b": {"delay": 5}})
    with pytest.raises(LinkConfigError, match="up: unknown key"):
        LinkParams.from_dict({"up": {}})


def test_round_trip_through_dict():
    params = LinkParams(DirectionParams(10, 1, 5, 10.0, 50), DirectionParams(20, 0, 0, None, 100))
    assert LinkParams.from_dict(params.to_dict()) == params


@pytest.mark.parametrize(("direction", "up_loss", "down_loss"), [("up", 30, 0), ("down", 0, 30), ("both", 30, 30)])
def test_for_rtt_splits_delay_and_places_loss(direction, up_loss, down_loss):
    params = LinkParams.for_rtt(rtt_ms=40, rate_mbit=10, loss_pct=30, loss_direction=direction)
    assert params.a_to_b.delay_ms == params.b_to_a.delay_ms == 20
    assert (params.a_to_b.loss_pct, params.b_to_a.loss_pct) == (up_loss, down_loss)
    assert params.a_to_b.rate_mbit == params.b_to_a.rate_mbit == 10


def test_for_rtt_rejects_unknown_direction():
    with pytest.raises(LinkConfigError, match="loss_direction='sideways'"):
        LinkParams.for_rtt(rtt_ms=20, loss_direction="sideways")
