"""Kernel loss rules: iptables command builders and counter parsing."""

import pytest

from topologies.linkparams import LinkConfigError
from topologies.lossrules import (
    LossRule,
    add_rule_command,
    delete_rule_command,
    parse_drop_count,
)


def test_syn_only_rule_on_egress():
    rule = LossRule(chain="OUTPUT", loss_pct=50, match="tcp-syn", out_interface="a1", comment="rl-syn-p1")
    assert add_rule_command(rule) == [
        "iptables", "-w", "-A", "OUTPUT", "-o", "a1", "-p", "tcp", "--syn",
        "-m", "statistic", "--mode", "random", "--probability", "0.500000",
        "-m", "comment", "--comment", "rl-syn-p1", "-j", "DROP",
    ]  # fmt: skip
    assert delete_rule_command(rule)[2:4] == ["-D", "OUTPUT"]


def test_full_loss_needs_no_statistic_match():
    rule = LossRule(chain="FORWARD", loss_pct=100, in_interface="r-a1")
    assert "statistic" not in add_rule_command(rule)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"chain": "PREROUTING", "loss_pct": 1}, "chain='PREROUTING'"),
        ({"chain": "OUTPUT", "loss_pct": 0}, "loss_pct=0"),
        ({"chain": "OUTPUT", "loss_pct": 101}, "loss_pct=101"),
        ({"chain": "OUTPUT", "loss_pct": 5, "in_interface": "a1"}, "in_interface='a1'"),
        ({"chain": "INPUT", "loss_pct": 5, "out_interface": "a1"}, "out_interface='a1'"),
        ({"chain": "INPUT", "loss_pct": 5, "match": "icmp"}, "match='icmp'"),
        ({"chain": "INPUT", "loss_pct": 5, "comment": "mine"}, "comment='mine'"),
    ],
)
def test_bad_rules_rejected(kwargs, needle):
    with pytest.raises(LinkConfigError, match=needle):
        LossRule(**kwargs)


def test_parse_drop_count():
    listing = """Chain OUTPUT (policy ACCEPT 120 packets, 9000 bytes)
    pkts      bytes target     prot opt in     out     source               destination
      17     1020 DROP       6    --  *      a1      0.0.0.0/0            0.0.0.0/0            tcp flags:0x17/0x02 statistic mode random probability 0.50000000000 /* rl-syn-p1 */
"""  # noqa: E501
    assert parse_drop_count(listing, "rl-syn-p1") == 17
    with pytest.raises(LinkConfigError):
        parse_drop_count(listing, "rl-other")
