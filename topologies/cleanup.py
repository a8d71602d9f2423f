"""Scoped clean-up: find and remove only what robe-lab created, and only what nobody runs any more.

Everything robe-lab creates carries the prefix ``rl-``, and, since names carry their owner, the
process id of the run that made it: ``rl-o<PID>-...`` (``owned_name``). What we create, and how it
is found again:

- Mininet hosts: shells whose command line ends in ``mininet:rl-o<PID>-...``; their (unnamed)
  network namespaces live as long as some process is inside.
- Processes started in a host (servers, proxies, dnsmasq, wget, agents): the environment variable
  ``ROBE_LAB_RUN=rl-o<PID>-...`` (``RUN_ENV``), inherited by their children. A killed run's shells
  exit with it, but these keep the namespace alive; the variable still finds them.
- Every process living in a namespace of one of those processes is ours too.
- Helper processes (link emulators): an argument ``--tag rl-o<PID>-...``.
- Named namespaces (the netem probe, tests): ``ip netns`` names; temporary folders: ``/tmp/rl-*``.

A thing whose owner process is gone (or a zombie) is a leftover of a dead run: a new run and
``make clean-net`` remove those and nothing else, so a sweep running beside them is never touched.
Names without an owner (older robe-lab, hand-made) are reported and left alone unless ``--all``.

Only processes of our own PID namespace are judged (a container's owner PIDs mean other processes).
A dead owner's PID taken by a new process makes its leftovers look alive: they stay (the safe side).

Never ``mn -c`` (it kills processes by name, including other people's) and never ``pkill -f``.
Run as ``python -m topologies.cleanup [--all]`` (``make clean-net``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from robe_lab.cliparse import command_parser
from topologies.shell import run

PREFIX = "rl-"
MININET_SHELL_MARK = "mininet:" + PREFIX
#: Environment variable marking every process a network starts in its hosts (value: the run tag).
RUN_ENV = "ROBE_LAB_RUN"
_OWNER = re.compile(r"^rl-o(\d+)-")


def owned_name(kind: str = "", owner: int | None = None) -> str:
    """A fresh ``rl-o<PID>-[kind-]<random>`` name owned by this process (or ``owner``)."""
    pid = os.getpid() if owner is None else owner
    middle = f"{kind}-" if kind else ""
    return f"{PREFIX}o{pid}-{middle}{uuid.uuid4().hex[:6]}"


def owner_of(name: str) -> int | None:
    """The owner PID a name carries (``rl-o<PID>-...``), or None for names without one."""
    match = _OWNER.match(name)
    return int(match.group(1)) if match else None


def owner_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not reaped yet, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


@dataclass(frozen=True)
class Leftover:
    """One process, namespace or folder of ours; ``owner`` None when its name carries none."""

    kind: str  # "process", "namespace", "folder"
    name: str  # pid, namespace name or path
    what: str  # command line, or the name again
    owner: int | None

    def describe(self) -> str:
        """One line for the report."""
        owner = f"owner {self.owner}" if self.owner is not None else "no owner"
        return f"clean-net: {self.kind} {self.name} ({owner}): {self.what[:100]}"


@dataclass
class CleanupReport:
    """What a clean-up removed and what it left alone (and why)."""

    removed: list[Leftover] = field(default_factory=list)
    live: list[Leftover] = field(default_factory=list)  # owner still running: never touched
    unowned: list[Leftover] = field(default_factory=list)  # no owner in the name: only with --all

    @property
    def processes(self) -> list[tuple[int, str]]:
        """Removed processes as (pid, command line)."""
        return [(int(x.name), x.what) for x in self.removed if x.kind == "process"]

    @property
    def namespaces(self) -> list[str]:
        """Removed named namespaces."""
        return [x.name for x in self.removed if x.kind == "namespace"]

    @property
    def temp_dirs(self) -> list[str]:
        """Removed temporary folders."""
        return [x.name for x in self.removed if x.kind == "folder"]

    def empty(self) -> bool:
        """True when nothing was removed."""
        return not self.removed

    def summary(self) -> str:
        """Human-readable lines."""
        lines = [x.describe() for x in self.removed] or ["clean-net: no leftovers of dead robe-lab runs found"]
        if self.live:
            owners = sorted({x.owner for x in self.live if x.owner is not None})
            lines.append(f"clean-net: left alone {len(self.live)} item(s) of running robe-lab runs "
                         f"(owners {', '.join(map(str, owners))})")  # fmt: skip
        if self.unowned:
            lines.append(f"clean-net: left alone {len(self.unowned)} item(s) named rl- without an owner (older "
                         "robe-lab or made by hand); 'make clean-net ARGS=--all' removes them too")  # fmt: skip
        return "\n".join(lines)


def read_cmdline(pid: int) -> list[str]:
    """argv of a process ([] if it is gone or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_run_env(pid: int) -> str | None:
    """The ``ROBE_LAB_RUN`` value in a process's environment (None if absent or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = RUN_ENV.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            value = entry[len(prefix) :].decode(errors="replace")
            return value if value.startswith(PREFIX) else None
    return None


def tag_of(argv: list[str]) -> str | None:
    """The rl- name in a command line: a Mininet shell's host name or a helper's ``--tag``."""
    for arg in argv:
        if arg.startswith(MININET_SHELL_MARK):
            return arg[len("mininet:") :]
    for flag, value in itertools.pairwise(argv):
        if flag == "--tag" and value.startswith(PREFIX):
            return value
    return None


def is_ours(argv: list[str]) -> bool:
    """A Mininet shell of one of our hosts, or a helper tagged ``--tag rl-...``."""
    return tag_of(argv) is not None


def netns_inode(pid: int) -> int | None:
    """Inode of the network namespace of ``pid`` (None if unreadable)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pid_namespace(pid: int | str) -> int | None:
    """Inode of the PID namespace of ``pid`` (None if unreadable)."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def all_pids() -> list[int]:
    """Every process id in our PID namespace, except our own.

    Processes of another PID namespace (a container, e.g. ``make fresh-check``'s) are never ours to
    judge: the owner PIDs in their names count in their namespace, where a live owner would look
    dead from here.
    """
    me, mine = os.getpid(), pid_namespace("self")
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and int(name) != me and pid_namespace(name) == mine]  # fmt: skip


def protected_netns_inodes() -> set[int]:
    """Namespaces never to sweep: the initial one (if readable) and the caller's own."""
    return {inode for inode in (netns_inode(1), netns_inode(os.getpid())) if inode is not None}


def processes_in_netns(inodes: set[int], exclude: Collection[int] = ()) -> list[int]:
    """Processes living in any of the namespaces ``inodes`` (never a protected one)."""
    inodes = set(inodes) - protected_netns_inodes()
    return [pid for pid in all_pids() if pid not in exclude and netns_inode(pid) in inodes]


def our_processes() -> list[Leftover]:
    """Every process of ours with its owner: tagged, marked in its environment, or inside a
    namespace of one of those (the namespace's owner then)."""
    pids = all_pids()
    argvs = {pid: read_cmdline(pid) for pid in pids}
    names: dict[int, str] = {}
    for pid, argv in argvs.items():
        name = tag_of(argv) or read_run_env(pid)
        if name is not None:
            names[pid] = name
    protected = protected_netns_inodes()
    owner_by_netns: dict[int, int | None] = {}
    for pid, name in names.items():
        inode = netns_inode(pid)
        if inode is not None and inode not in protected:
            owner_by_netns.setdefault(inode, owner_of(name))
    found = [Leftover("process", str(pid), " ".join(argvs[pid]) or "?", owner_of(name)) for pid, name in names.items()]
    for pid in pids:
        if pid in names:
            continue
        inode = netns_inode(pid)
        if inode in owner_by_netns:
            found.append(Leftover("process", str(pid), " ".join(argvs[pid]) or "?", owner_by_netns[inode]))
    return sorted(found, key=lambda x: int(x.name))


def find_our_processes() -> list[tuple[int, str]]:
    """Every process of ours, whoever owns it, as (pid, command line)."""
    return [(int(x.name), x.what) for x in our_processes()]


def processes_of(owner: int) -> list[tuple[int, str]]:
    """The processes of the run whose owner is ``owner`` (pid, command line)."""
    return [(int(x.name), x.what) for x in our_processes() if x.owner == owner]


def terminate(pids: Iterable[int], grace_s: float = 2.0) -> None:
    """SIGTERM, wait up to grace_s, then SIGKILL whatever is left."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(owner_alive(pid) for pid in pids):
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


def _sort(items: Sequence[Leftover], everything: bool, report: CleanupReport) -> list[Leftover]:
    """The items to remove now; the others are filed in the report as live or unowned."""
    chosen = []
    for item in items:
        if item.owner is None and not everything:
            report.unowned.append(item)
        elif item.owner is not None and owner_alive(item.owner):
            report.live.append(item)
        else:
            chosen.append(item)
    return chosen


def clean(*, everything: bool = False, temp_dirs: bool = True) -> CleanupReport:
    """Remove the processes, namespaces and temporary folders of dead robe-lab runs.

    ``everything``: also what carries no owner (names of older robe-lab versions); a live run's
    things are never removed.
    """
    report = CleanupReport()
    processes = _sort(our_processes(), everything, report)
    terminate(int(x.name) for x in processes)
    report.removed += processes
    namespaces = [Leftover("namespace", n, n, owner_of(n)) for n in our_named_namespaces()]
    for item in _sort(namespaces, everything, report):
        # Processes inside a named namespace keep it alive after ``ip netns del``.
        with contextlib.suppress(OSError):
            inode = os.stat(f"/run/netns/{item.name}").st_ino
            terminate(processes_in_netns({inode}), grace_s=1.0)
        run(["ip", "netns", "del", item.name], check=False)
        report.removed.append(item)
    if temp_dirs:
        folders = [Leftover("folder", p, p, owner_of(Path(p).name)) for p in our_temp_dirs()]
        for item in _sort(folders, everything, report):
            shutil.rmtree(item.name, ignore_errors=True)
            report.removed.append(item)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: clean up and print what was removed and what was left alone."""
    parser = command_parser("topologies.cleanup", __doc__)
    parser.add_argument("--all", action="store_true",
                        help="also remove rl- things without an owner (older robe-lab)")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("clean-net: needs root (it removes network namespaces): run 'sudo make clean-net'", file=sys.stderr)
        return 2
    print(clean(everything=args.all).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
