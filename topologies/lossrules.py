"""Targeted loss with kernel rules (iptables ``statistic``), e.g. SYN-only loss on one path.

Random link loss comes from the link backends; these rules drop a chosen class of packets
(all, TCP SYNs only, UDP only) on one interface and direction, at no CPU cost, with a counter that
tells exactly how many packets were dropped. Every rule carries a comment with our prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from topologies.linkparams import LinkConfigError
from topologies.shell import in_netns, run

Chain = Literal["INPUT", "OUTPUT", "FORWARD"]
Match = Literal["all", "tcp-syn", "tcp", "udp"]


@dataclass(frozen=True)
class LossRule:
    """Drop packets of class ``match`` with probability ``loss_pct`` on a chain and interface.

    Attributes:
        chain: OUTPUT for a host's own egress, INPUT for its ingress, FORWARD on a router.
        loss_pct: drop probability in percent (0 < loss_pct <= 100).
        match: which packets: all, tcp-syn (SYN without ACK: connection attempts, MP_JOIN SYNs
            included), tcp, or udp.
        in_interface / out_interface: restrict to packets entering / leaving this interface.
        comment: label on the rule (``rl-`` prefixed) used to find its counter.
    """

    chain: Chain
    loss_pct: float
    match: Match = "all"
    in_interface: str | None = None
    out_interface: str | None = None
    comment: str = "rl-loss"

    def __post_init__(self) -> None:
        if self.chain not in ("INPUT", "OUTPUT", "FORWARD"):
            raise LinkConfigError(f"chain={self.chain!r}: must be INPUT, OUTPUT or FORWARD")
        if self.match not in ("all", "tcp-syn", "tcp", "udp"):
            raise LinkConfigError(f"match={self.match!r}: must be all, tcp-syn, tcp or udp")
        if isinstance(self.loss_pct, bool) or not isinstance(self.loss_pct, int | float):
            raise LinkConfigError(f"loss_pct={self.loss_pct!r}: must be a number")
        if not 0 < self.loss_pct <= 100:
            raise LinkConfigError(f"loss_pct={self.loss_pct!r}: must be within (0, 100]")
        if self.chain == "OUTPUT" and self.in_interface:
            raise LinkConfigError(f"in_interface={self.in_interface!r}: OUTPUT packets have no in-interface")
        if self.chain == "INPUT" and self.out_interface:
            raise LinkConfigError(f"out_interface={self.out_interface!r}: INPUT has no out-interface")
        if not self.comment.startswith("rl-"):
            raise LinkConfigError(f"comment={self.comment!r}: must start with 'rl-'")


def iptables_rule_spec(rule: LossRule) -> list[str]:
    """The match/target part of the rule (shared by append and delete)."""
    spec: list[str] = []
    if rule.in_interface:
        spec += ["-i", rule.in_interface]
    if rule.out_interface:
        spec += ["-o", rule.out_interface]
    if rule.match == "tcp-syn":
        spec += ["-p", "tcp", "--syn"]
    elif rule.match in ("tcp", "udp"):
        spec += ["-p", rule.match]
    if rule.loss_pct < 100:
        spec += ["-m", "statistic", "--mode", "random", "--probability", f"{rule.loss_pct / 100:.6f}"]
    spec += ["-m", "comment", "--comment", rule.comment, "-j", "DROP"]
    return spec


def add_rule_command(rule: LossRule) -> list[str]:
    """iptables command appending the rule."""
    return ["iptables", "-w", "-A", rule.chain, *iptables_rule_spec(rule)]


def delete_rule_command(rule: LossRule) -> list[str]:
    """iptables command deleting the rule."""
    return ["iptables", "-w", "-D", rule.chain, *iptables_rule_spec(rule)]


def list_chain_command(chain: Chain) -> list[str]:
    """iptables command listing a chain with exact counters."""
    return ["iptables", "-w", "-L", chain, "-v", "-x", "-n"]


def parse_drop_count(listing: str, comment: str) -> int:
    """Packets dropped by the rule whose comment is ``comment`` in an ``iptables -L -v -x -n`` listing."""
    for line in listing.splitlines():
        if f"/* {comment} */" in line:
            return int(line.split()[0])
    raise LinkConfigError(f"comment={comment!r}: no such rule in the listing")


def add_loss_rule(node_pid: int, rule: LossRule) -> None:
    """Install the rule in the network namespace of process ``node_pid``."""
    run(in_netns(node_pid, add_rule_command(rule)))


def remove_loss_rule(node_pid: int, rule: LossRule) -> None:
    """Remove the rule again."""
    run(in_netns(node_pid, delete_rule_command(rule)))


def dropped_packets(node_pid: int, rule: LossRule) -> int:
    """How many packets the rule has dropped so far."""
    listing = run(in_netns(node_pid, list_chain_command(rule.chain))).stdout
    return parse_drop_count(listing, rule.comment)
