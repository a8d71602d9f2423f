"""DNS of the emulated internet: dnsmasq answering only for the recorded hosts, and private resolvers.

Pure builders (unit-tested): ``hosts_file_text`` (one ``ADDRESS NAME`` line per origin host),
``dnsmasq_command`` (a dnsmasq bound to one address that answers from that file and returns
NXDOMAIN for every other name: no /etc/hosts, no resolv.conf, no upstream, no DHCP, stays in the
foreground), ``resolv_conf_text`` and ``with_resolver`` (run a program with a private
/etc/resolv.conf: a new mount namespace with our file bind-mounted over it, since Mininet hosts
share the root filesystem). The commands run through ``topologies.shell``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Standard resolver settings of glibc, written explicitly so a run's metadata shows them.
DEFAULT_TIMEOUT_S = 5
DEFAULT_ATTEMPTS = 2

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class DnsConfigError(ValueError):
    """A bad name, address or path for the DNS configuration; the message names it."""


def _check_address(field: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise DnsConfigError(f"{field}={value!r}: not an IP address") from None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise DnsConfigError(f"host name {name!r}: must be a non-empty string")
    lowered = name.lower().rstrip(".")
    labels = lowered.split(".")
    if len(lowered) > 253 or not all(_LABEL.match(label) for label in labels):
        raise DnsConfigError(f"host name {name!r}: not a valid DNS name")
    try:
        ipaddress.ip_address(lowered)
    except ValueError:
        return lowered
    raise DnsConfigError(f"host name {name!r}: an IP literal needs no DNS entry")


def hosts_file_text(addresses: Mapping[str, str]) -> str:
    """Hosts-file text (``ADDRESS NAME`` per line, sorted by name) for dnsmasq's ``--addn-hosts``.

    ``addresses`` maps host name to address (``webreplay.model.origin_addresses``). Names are
    lower-cased; an invalid name or address raises DnsConfigError naming it.
    """
    lines = []
    seen: dict[str, str] = {}
    for name, address in addresses.items():
        host = _check_name(name)
        addr = _check_address(f"addresses[{name!r}]", address)
        if seen.get(host, addr) != addr:
            raise DnsConfigError(f"host name {name!r}: two addresses ({seen[host]}, {addr})")
        seen[host] = addr
    for host in sorted(seen):
        lines.append(f"{seen[host]} {host}\n")
    return "".join(lines)


def dnsmasq_command(
    listen_address: str,
    hosts_file: Path | str,
    pid_file: Path | str,
    log_file: Path | str,
    *,
    port: int = 53,
    local_ttl: int = 0,
    log_queries: bool = True,
    executable: str = "dnsmasq",
) -> list[str]:
    """Command line of a foreground dnsmasq answering only from ``hosts_file``, bound to one address.

    * ``--conf-file=/dev/null``: ignore the system /etc/dnsmasq.conf; ``--no-hosts``: ignore
      /etc/hosts; ``--no-resolv`` and ``--local=/#/``: no upstream, every name not in
      ``hosts_file`` gets NXDOMAIN (a name in it but without an AAAA record gets NODATA);
    * ``--listen-address`` + ``--bind-interfaces``: bind exactly that address (it must exist when
      dnsmasq starts), not the loopback too; no ``--dhcp-range``: no DHCP;
    * ``--cache-size=0 --no-negcache``: nothing to cache without upstream; hosts entries are
      always served; ``--local-ttl``: the TTL in answers (0: clients ask every time);
    * ``--keep-in-foreground``: the caller owns the process; ``--user=root --group=root``: keep
      root inside the namespace so the log and pid files stay writable.
    """
    address = _check_address("listen_address", listen_address)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DnsConfigError(f"port={port!r}: must be 1..65535")
    if isinstance(local_ttl, bool) or not isinstance(local_ttl, int) or not 0 <= local_ttl <= 86400:
        raise DnsConfigError(f"local_ttl={local_ttl!r}: must be 0..86400 seconds")
    argv = [
        executable,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--local=/#/",
        f"--addn-hosts={hosts_file}",
        f"--listen-address={address}",
        "--bind-interfaces",
        f"--port={port}",
        "--cache-size=0",
        "--no-negcache",
        f"--local-ttl={local_ttl}",
        f"--pid-file={pid_file}",
        f"--log-facility={log_file}",
        "--user=root",
        "--group=root",
    ]
    if log_queries:
        argv.append("--log-queries")
    return argv


def resolv_conf_text(
    server: str, *, timeout_s: int = DEFAULT_TIMEOUT_S, attempts: int = DEFAULT_ATTEMPTS, port: int = 53
) -> str:
    """A resolv.conf using only ``server`` (no search domains); glibc's timeout/attempts written out.

    glibc's resolv.conf has no port syntax, so ``port`` must be 53 (it exists to say so loudly).
    """
    address = _check_address("server", server)
    if port != 53:
        raise DnsConfigError(f"port={port!r}: resolv.conf cannot name a port; dnsmasq must listen on 53")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or not 1 <= timeout_s <= 30:
        raise DnsConfigError(f"timeout_s={timeout_s!r}: must be 1..30 (glibc's range)")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 5:
        raise DnsConfigError(f"attempts={attempts!r}: must be 1..5 (glibc's range)")
    return f"nameserver {address}\noptions timeout:{timeout_s} attempts:{attempts}\n"


#: Shell script of ``with_resolver``: $1 is the resolv.conf, the rest is the program. argv stays
#: out of the script text (positional parameters), so nothing in it is ever parsed by the shell.
_BIND_SCRIPT = 'mount --bind -- "$1" /etc/resolv.conf && shift && exec "$@"'


def with_resolver(resolv_conf_path: Path | str, argv: Sequence[str]) -> list[str]:
    """Wrap argv to run with ``resolv_conf_path`` bind-mounted over /etc/resolv.conf.

    ``unshare --mount --propagation private`` gives the program its own mount namespace, so the
    bind mount is invisible to everything else (the host, other Mininet hosts) and disappears
    with the program. Needs root (CAP_SYS_ADMIN). Compose with ``topologies.shell.in_netns`` to
    run inside a Mininet host's network namespace.
    """
    if not argv:
        raise DnsConfigError("argv: empty command")
    path = str(resolv_conf_path)
    if not path.startswith("/"):
        raise DnsConfigError(f"resolv_conf_path={path!r}: must be absolute (the mount runs elsewhere)")
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    return [*unshare, "sh", "-c", _BIND_SCRIPT, "with_resolver", path, *argv]
