"""iptables rules that send the client's web connections to the transparent client proxy.

Pure builders return argv lists; ``install`` and ``remove`` run them through
``topologies.shell.run``. The rules live in a chain of their own (``rl-proxy-<port>``), jumped to
from ``nat OUTPUT``, so removing them removes exactly what was installed::

    iptables -t nat -N rl-proxy-3129
    iptables -t nat -A rl-proxy-3129 -d 10.201.0.1 -j RETURN          # the proxy's own HAAP connections
    iptables -t nat -A rl-proxy-3129 -p tcp -d 198.18.0.0/15 -m multiport --dports 80,443 \\
        -j REDIRECT --to-ports 3129
    iptables -t nat -A OUTPUT -p tcp -j rl-proxy-3129
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from robe_lab import commands as shell

DEFAULT_NETWORKS = ("198.18.0.0/15",)
DEFAULT_PORTS = (80, 443)

Runner = Callable[[Sequence[str]], object]


@dataclass(frozen=True)
class RedirectConfig:
    """What to redirect where.

    Attributes:
        to_port: the client proxy's listening port.
        networks: destination networks (IPv4) whose connections are redirected.
        ports: destination ports redirected.
        exclude: destinations never redirected (the HAAP's addresses).
    """

    to_port: int
    networks: tuple[str, ...] = DEFAULT_NETWORKS
    ports: tuple[int, ...] = DEFAULT_PORTS
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.to_port < 65536:
            raise ValueError(f"to_port={self.to_port}: must be 1..65535")
        if not self.networks:
            raise ValueError("networks=(): give at least one destination network")
        for net in self.networks:
            try:
                ipaddress.IPv4Network(net)
            except ValueError:
                raise ValueError(f"networks: {net!r} is not an IPv4 network") from None
        if not self.ports or not 1 <= len(self.ports) <= 15:
            raise ValueError(f"ports={self.ports}: give 1..15 ports (iptables multiport)")
        for port in self.ports:
            if not 0 < port < 65536:
                raise ValueError(f"ports: {port} must be 1..65535")
        for address in self.exclude:
            try:
                ipaddress.IPv4Network(address)
            except ValueError:
                raise ValueError(f"exclude: {address!r} is not an IPv4 address or network") from None

    @property
    def chain(self) -> str:
        """The chain holding the rules."""
        return f"rl-proxy-{self.to_port}"


def _nat(*args: str) -> list[str]:
    return ["iptables", "-w", "-t", "nat", *args]


def install_commands(config: RedirectConfig) -> list[list[str]]:
    """The commands that install the redirect."""
    chain = config.chain
    commands = [_nat("-N", chain)]
    commands += [_nat("-A", chain, "-d", address, "-j", "RETURN") for address in config.exclude]
    ports = ",".join(str(p) for p in config.ports)
    commands += [
        _nat("-A", chain, "-p", "tcp", "-d", net, "-m", "multiport", "--dports", ports,
             "-j", "REDIRECT", "--to-ports", str(config.to_port))
        for net in config.networks
    ]  # fmt: skip
    commands.append(_nat("-A", "OUTPUT", "-p", "tcp", "-j", chain))
    return commands


def remove_commands(config: RedirectConfig) -> list[list[str]]:
    """The commands that remove what ``install_commands`` added."""
    chain = config.chain
    return [_nat("-D", "OUTPUT", "-p", "tcp", "-j", chain), _nat("-F", chain), _nat("-X", chain)]


def install(config: RedirectConfig, runner: Runner = shell.run) -> None:
    """Install the redirect; on a failure, remove what was installed and re-raise."""
    try:
        for argv in install_commands(config):
            runner(argv)
    except Exception:
        remove(config, runner)
        raise


def remove(config: RedirectConfig, runner: Runner | None = None) -> list[str]:
    """Remove the redirect; every command runs even if one fails. Returns the failures."""
    failures = []
    for argv in remove_commands(config):
        try:
            if runner is None:
                shell.run(argv, check=True)
            else:
                runner(argv)
        except (shell.CommandError, OSError) as err:
            failures.append(str(err))
    return failures
