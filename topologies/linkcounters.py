"""Packet counters on the client's access links: what a connection strategy puts on the wire.

The cost of robustness (issue 14) is counted where it happens, on the client's side of both paths:
SYNs sent (every potentially initial subflow and MP_JOIN, retransmissions included), SYN/ACKs
received, RSTs sent (the losers RobE resets) and received, and all TCP packets and bytes both ways.
The counters are iptables rules without a target in the mangle table of the client host's own
namespace (iptables is installed everywhere the experiments run; nothing else in that namespace
uses these chains), read with ``iptables-save -c`` before and after each attempt or page load; the
difference is that attempt's cost. Rules are built by pure functions (unit-tested) and run through the caller's
runner (``topologies.shell``), as the client proxy's redirect rules are.

Packets are counted as they leave or reach the client's interfaces (POSTROUTING and INPUT hooks), so
a SYN the emulated link then drops still counts as sent, as it should: it was sent. Outgoing packets
are matched in POSTROUTING, not OUTPUT: a connection that the nat table's OUTPUT REDIRECTs to a local
port (experiment 2's client proxy takes wget's connections so) keeps the device of its original
route in every later OUTPUT hook (the hook state's output device is fixed when the packet enters
LOCAL_OUT), so an OUTPUT rule ``-o a1`` counted wget's SYN and packets to the proxy, which never
reach a1: one SYN per connection without SYN/ACK (measured against tcpdump on a1/a2, README
"The cost of robustness"). POSTROUTING sees the device the packet really leaves by (lo for those).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Runs a command in the host's namespace (checked) and returns its standard output.
Runner = Callable[[Sequence[str]], str]

#: The table of the chains (it has both hooks below).
TABLE = "mangle"
#: The two chains, jumped to from POSTROUTING and INPUT of the mangle table.
CHAINS = {"out": "rl-cost-out", "in": "rl-cost-in"}
#: counter -> (direction, iptables match): SYN without ACK (a connection or join attempt), SYN/ACK,
#: RST (with or without ACK), any TCP packet.
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "syns_sent": ("out", ("-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN")),
    "synacks_received": ("in", ("-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN,ACK")),
    "rsts_sent": ("out", ("-p", "tcp", "--tcp-flags", "RST", "RST")),
    "rsts_received": ("in", ("-p", "tcp", "--tcp-flags", "RST", "RST")),
    "tcp_out": ("out", ("-p", "tcp")),
    "tcp_in": ("in", ("-p", "tcp")),
}
_HOOKS = {"out": ("POSTROUTING", "-o"), "in": ("INPUT", "-i")}
_SAVED = re.compile(r"^\[(\d+):(\d+)\] -A (rl-cost-(?:out|in)) .*--comment \"?([a-z_]+)@([\w.-]+)\"?")


class CounterError(RuntimeError):
    """The counters could not be read; the message says what was missing."""


def _table(*args: str) -> list[str]:
    return ["iptables", "-w", "-t", TABLE, *args]


def install_commands(interfaces: Sequence[str]) -> list[list[str]]:
    """The commands that create both chains, one rule per counter and interface, and the jumps."""
    if not interfaces:
        raise ValueError("interfaces=(): give the client's access interfaces")
    commands = [_table("-N", chain) for chain in CHAINS.values()]
    for name, (direction, match) in COUNTERS.items():
        hook_option = _HOOKS[direction][1]
        for intf in interfaces:
            commands.append(_table("-A", CHAINS[direction], hook_option, intf, *match,
                                    "-m", "comment", "--comment", f"{name}@{intf}"))  # fmt: skip
    commands += [_table("-A", _HOOKS[d][0], "-j", chain) for d, chain in CHAINS.items()]
    return commands


def remove_commands() -> list[list[str]]:
    """The commands that remove what ``install_commands`` added (run when the namespace stays)."""
    commands = [_table("-D", _HOOKS[d][0], "-j", chain) for d, chain in CHAINS.items()]
    for chain in CHAINS.values():
        commands += [_table("-F", chain), _table("-X", chain)]
    return commands


READ_COMMAND = ["iptables-save", "-c", "-t", TABLE]


def parse_saved(text: str) -> dict[str, tuple[int, int]]:
    """counter -> (packets, bytes), summed over the interfaces, from ``iptables-save -c`` output;
    CounterError if a counter is missing (the rules were removed or never installed)."""
    totals: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        match = _SAVED.match(line.strip())
        if match is None:
            continue
        packets, size, _, name, _ = match.groups()
        before = totals.get(name, (0, 0))
        totals[name] = (before[0] + int(packets), before[1] + int(size))
    missing = [name for name in COUNTERS if name not in totals]
    if missing:
        raise CounterError(f"iptables-save shows no counter {', '.join(missing)} (chains {', '.join(CHAINS.values())})")
    return totals


@dataclass(frozen=True)
class WireCost:
    """What crossed the client's access links between two readings."""

    syns_sent: int
    synacks_received: int
    rsts_sent: int
    rsts_received: int
    packets: int  # TCP packets, both directions
    bytes: int  # their IP bytes, both directions

    def columns(self) -> dict[str, int]:
        """The runs.csv columns (``analysis.schema``: ``wire_*``)."""
        return {
            "wire_syns_sent": self.syns_sent,
            "wire_synacks_received": self.synacks_received,
            "wire_rsts_sent": self.rsts_sent,
            "wire_rsts_received": self.rsts_received,
            "wire_packets": self.packets,
            "wire_bytes": self.bytes,
        }


#: The ``wire_*`` columns of a row without a reading (an attempt that broke before or after it).
NO_COLUMNS: dict[str, str] = dict.fromkeys(WireCost(0, 0, 0, 0, 0, 0).columns(), "")


def difference(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> WireCost:
    """The cost between two ``parse_saved`` readings."""

    def packets(name: str) -> int:
        return after[name][0] - before[name][0]

    def size(name: str) -> int:
        return after[name][1] - before[name][1]

    return WireCost(packets("syns_sent"), packets("synacks_received"), packets("rsts_sent"),
                    packets("rsts_received"), packets("tcp_out") + packets("tcp_in"),
                    size("tcp_out") + size("tcp_in"))  # fmt: skip


class LinkCounters:
    """The counters of one host: ``install`` once, ``reading`` before and after each attempt."""

    def __init__(self, runner: Runner, interfaces: Sequence[str]) -> None:
        self.runner = runner
        self.interfaces = tuple(interfaces)

    def install(self) -> None:
        """Create the chains and rules (on a failure, remove what was made and re-raise)."""
        try:
            for argv in install_commands(self.interfaces):
                self.runner(argv)
        except Exception:
            self.remove()
            raise

    def remove(self) -> list[str]:
        """Remove the chains; every command runs even if one fails. Returns the failures."""
        failures = []
        for argv in remove_commands():
            try:
                self.runner(argv)
            except Exception as err:
                failures.append(str(err))
        return failures

    def reading(self) -> dict[str, tuple[int, int]]:
        """The counters now."""
        return parse_saved(self.runner(READ_COMMAND))
