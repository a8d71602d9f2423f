"""Scoped clean-up: find and remove only what robe-lab created, by name prefix ``rl-``.

What we create, and how it is found again:

- Mininet hosts: shells whose command line ends in ``mininet:rl-...``; their (unnamed) network
  namespaces live as long as some process is inside, so every process inside one of those
  namespaces is ours too (servers, probes, iperf3).
- Helper processes (link emulators, endpoints): an argument ``--tag rl-...``.
- Named namespaces (the netem probe, tests): ``ip netns`` names starting with ``rl-``.
- Temporary folders: ``/tmp/rl-*``.

Never ``mn -c`` (it kills processes by name, including other people's) and never ``pkill -f``.
Run as ``python -m topologies.cleanup`` (``make clean-net``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import sys
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from topologies.shell import run

PREFIX = "rl-"
MININET_SHELL_MARK = "mininet:" + PREFIX


@dataclass
class CleanupReport:
    """What a clean-up found and removed."""

    processes: list[tuple[int, str]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        """True when nothing of ours was found."""
        return not (self.processes or self.namespaces or self.temp_dirs)

    def summary(self) -> str:
        """Human-readable lines."""
        if self.empty():
            return "clean-net: nothing of robe-lab's found"
        lines = [f"clean-net: process {pid}: {cmd[:100]}" for pid, cmd in self.processes]
        lines += [f"clean-net: namespace {name}" for name in self.namespaces]
        lines += [f"clean-net: folder {path}" for path in self.temp_dirs]
        return "\n".join(lines)


def read_cmdline(pid: int) -> list[str]:
    """argv of a process ([] if it is gone or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_ours(argv: list[str]) -> bool:
    """A Mininet shell of one of our hosts, or a helper tagged ``--tag rl-...``."""
    if any(arg.startswith(MININET_SHELL_MARK) for arg in argv):
        return True
    return any(a == "--tag" and b.startswith(PREFIX) for a, b in itertools.pairwise(argv))


def netns_inode(pid: int) -> int | None:
    """Inode of the network namespace of ``pid`` (None if unreadable)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def all_pids() -> list[int]:
    """Every process id, except our own."""
    me = os.getpid()
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != me]


def protected_netns_inodes() -> set[int]:
    """Namespaces never to sweep: the initial one (if readable) and the caller's own."""
    return {inode for inode in (netns_inode(1), netns_inode(os.getpid())) if inode is not None}


def processes_in_netns(inodes: set[int], exclude: Collection[int] = ()) -> list[int]:
    """Processes living in any of the namespaces ``inodes`` (never a protected one)."""
    inodes = set(inodes) - protected_netns_inodes()
    return [pid for pid in all_pids() if pid not in exclude and netns_inode(pid) in inodes]


def find_our_processes() -> list[tuple[int, str]]:
    """Our tagged processes plus every process living in a namespace of one of our Mininet hosts."""
    pids = all_pids()
    argvs = {pid: read_cmdline(pid) for pid in pids}
    ours = {pid for pid, argv in argvs.items() if is_ours(argv)}
    # Everything inside the namespaces of our Mininet shells is ours too.
    shells = [pid for pid in ours if any(a.startswith(MININET_SHELL_MARK) for a in argvs[pid])]
    host_namespaces = {inode for inode in map(netns_inode, shells) if inode is not None}
    ours.update(processes_in_netns(host_namespaces, exclude=ours))
    return sorted((pid, " ".join(argvs.get(pid, [])) or "?") for pid in ours)


def terminate(pids: Iterable[int], grace_s: float = 2.0) -> None:
    """SIGTERM, wait up to grace_s, then SIGKILL whatever is left."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def our_named_namespaces() -> list[str]:
    """``ip netns`` names with our prefix."""
    listing = run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return [name for name in names if name.startswith(PREFIX)]


def our_temp_dirs(tmp: str = "/tmp") -> list[str]:
    """Temporary folders with our prefix."""
    base = Path(tmp)
    return sorted(str(p) for p in base.glob(PREFIX + "*") if p.is_dir())


def clean(*, temp_dirs: bool = True) -> CleanupReport:
    """Remove every process, namespace and temporary folder of robe-lab's; report what it found."""
    report = CleanupReport(processes=find_our_processes())
    terminate(pid for pid, _ in report.processes)
    for name in our_named_namespaces():
        run(["ip", "netns", "del", name], check=False)
        report.namespaces.append(name)
    if temp_dirs:
        for path in our_temp_dirs():
            shutil.rmtree(path, ignore_errors=True)
            report.temp_dirs.append(path)
    return report


def main() -> int:
    """CLI: clean up and print what was removed."""
    if os.geteuid() != 0:
        print(
            "clean-net: needs root (it removes network namespaces): run 'sudo make clean-net'",
            file=sys.stderr,
        )
        return 2
    print(clean().summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
