"""``make fresh-check``: the README's commands on a fresh Debian 12 machine, with their times.

1. Installs what it needs on the host when missing (``scripts/fresh-check-packages.txt``:
   debootstrap, systemd-container, ...).
2. Builds, or reuses, a minimal Debian 12 root cached under ``/var/cache/robe-lab`` (see
   ``provision.rootfs``: minbase + git, make, sudo, ca-certificates and a user with sudo rights).
3. Clones the commit under test (HEAD by default: uncommitted changes are not tested) into the
   user's home in a throw-away overlay of that root.
4. Types, as that user, in a login shell under systemd-nspawn, the README's commands
   ``sudo make experiment1 PROFILE=quick`` and ``make test``, then ``sudo make integration-test``
   (the half of ``make test`` that the README says runs as root); each one's wall time and exit
   status go into the report. The set-up inside happens only through these commands.
5. Checks that the experiment recorded the commit, removes the overlay and checks that no process,
   mount or network interface is left behind (also after Ctrl-C).

Report and full log: ``/var/tmp/robe-lab-fresh-check/<UTC time>-<commit>/``. Exit status 0 only
when every command passed and nothing was left behind.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from provision.container import (
    Layers,
    StepResult,
    link_names,
    mounts_under,
    nspawn_command,
    nspawn_environment,
    overlay_mount_command,
    processes_rooted_in,
    run_streaming,
    trust_host_certificates,
)
from provision.packages import FRESH_CHECK_LIST, PROJECT_ROOT, installed_packages, read_package_list
from provision.rootfs import DEFAULT_CACHE, RootRecipe, ensure_root
from robe_lab.cliparse import command_parser

#: The commands typed in the fresh machine, in order (as the README writes them).
STEPS = ("sudo make experiment1 PROFILE=quick", "make test", "sudo make integration-test",
         "make experiment2 PROFILE=quick")  # fmt: skip
#: The folder the last step (as the user, without sudo: the target runs itself through sudo) writes;
#: every file in it must belong to the user.
USER_RESULTS = Path("results") / "experiment2" / "quick"
DEFAULT_LOGS = Path("/var/tmp/robe-lab-fresh-check")
#: Set once the process runs in its own mount namespace (see ``main``).
PRIVATE_MOUNTS_ENV = "ROBE_LAB_FRESH_CHECK_PRIVATE_MOUNTS"
#: systemd-nspawn's state folder (a private tmpfs during a run).
NSPAWN_STATE = Path("/run/systemd/nspawn")
#: Names of the interfaces robe-lab's topologies create (prefix of every robe-lab name).
OUR_PREFIX = "rl-"


class FreshCheckError(RuntimeError):
    """fresh-check cannot run (not root, a tool missing, a bad revision); one line says why."""


def duration(seconds: float) -> str:
    """``2 min 05 s`` / ``41 s``."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{whole} s"


@dataclass
class Report:
    """What the run found; ``lines()`` is what is printed and stored."""

    commit: str
    revision: str
    dirty_warning: str
    recipe: str
    root_line: str = ""
    trusted: list[str] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    recorded_commit: str = ""
    foreign_owned: list[str] | None = None  # under USER_RESULTS, not the user's (None: not checked)
    leftovers: list[str] = field(default_factory=list)
    total_seconds: float = 0.0
    log: Path | None = None
    interrupted: bool = False

    @property
    def recorded_ok(self) -> bool:
        """The experiment's metadata names the commit under test, clean."""
        return self.recorded_commit == f"{self.commit} (clean)"

    @property
    def passed(self) -> bool:
        """Every command exited 0, the commit was recorded, nothing was left behind."""
        return (not self.interrupted and len(self.steps) == len(STEPS) and all(s.passed for s in self.steps)
                and self.recorded_ok and self.foreign_owned == [] and not self.leftovers)  # fmt: skip

    def lines(self) -> list[str]:
        """The report."""
        out = [f"fresh-check of commit {self.commit[:12]} ({self.revision}) on a fresh machine: {self.recipe}"]
        if self.dirty_warning:
            out.append(f"  note: {self.dirty_warning}")
        out.append(f"  root: {self.root_line}")
        if self.trusted:
            out.append(
                f"  network: the host's, trusting its CA certificate(s) beyond Debian's ({'; '.join(self.trusted)})"
            )
        width = max(len(s) for s in STEPS)
        for number, step in enumerate(self.steps, start=1):
            status = "stopped" if step.returncode is None else f"exit {step.returncode}"
            out.append(f"  [{number}] {step.command:<{width}}  {status:<8} {duration(step.seconds):>12}"
                       + (f"  ({step.note})" if step.note else ""))  # fmt: skip
        for number in range(len(self.steps) + 1, len(STEPS) + 1):
            out.append(f"  [{number}] {STEPS[number - 1]:<{width}}  not run")
        out.append(f"  commit recorded in results/experiment1/quick/metadata.json: {self.recorded_commit or 'none'}"
                   + ("" if self.recorded_ok else "  <- expected " + self.commit + " (clean)"))  # fmt: skip
        if self.foreign_owned is None:
            owners = "not checked"
        elif self.foreign_owned:
            owners = f"{len(self.foreign_owned)} not the user's: {', '.join(self.foreign_owned[:5])}"
        else:
            owners = "every file the user's"
        out.append(f"  {USER_RESULTS} (written through sudo by the user's make): {owners}")
        out.append("  left behind: " + ("; ".join(self.leftovers) if self.leftovers else
                                        "nothing (no process, mount, overlay or rl- interface)"))  # fmt: skip
        out.append(f"  total: {duration(self.total_seconds)}; log: {self.log}")
        verdict = "INTERRUPTED" if self.interrupted else ("PASSED" if self.passed else "FAILED")
        out.append(f"fresh-check: {verdict}")
        passed = sum(s.passed for s in self.steps)
        out.append(f"fresh-check: {passed} passed, {len(STEPS) - passed} failed")
        return out


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def ensure_host_tools(log: Callable[[str], None]) -> None:
    """Install the host tools of ``scripts/fresh-check-packages.txt`` that are missing."""
    packages = [entry.package for entry in read_package_list(FRESH_CHECK_LIST)]
    missing = [p for p in packages if p not in installed_packages(packages)]
    if not missing:
        return
    log(f"fresh-check: installing on this host: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        log(done.stdout + done.stderr)
        if done.returncode != 0:
            raise FreshCheckError(f"{' '.join(argv[:2])} failed (exit {done.returncode}): "
                                  f"{(done.stderr.strip().splitlines() or [''])[-1]}")  # fmt: skip


def resolve_commit(revision: str) -> tuple[str, str]:
    """(full commit of ``revision``, a warning when the work tree has uncommitted changes)."""
    argv = ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FreshCheckError(f"--rev {revision!r}: not a commit of {PROJECT_ROOT}")
    status = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, check=False).stdout  # fmt: skip
    warning = ""
    if status.strip():
        warning = f"uncommitted changes in {PROJECT_ROOT} are not tested: the check clones the commit"
    return done.stdout.strip(), warning


def user_ids(root: Path, user: str) -> tuple[int, int]:
    """uid and gid of ``user`` in the root's /etc/passwd."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise FreshCheckError(f"user {user!r} missing from {root}/etc/passwd")


def clone_into(home: Path, commit: str, uid: int, gid: int, log: Callable[[str], None]) -> Path:
    """A clean clone of the repository at ``commit`` in the user's home, owned by the user."""
    dest = home / "robe-lab"
    for argv in (["git", "clone", "--quiet", "--no-checkout", str(PROJECT_ROOT), str(dest)],
                 ["git", "-C", str(dest), "checkout", "--quiet", "--detach", commit]):  # fmt: skip
        log("$ " + " ".join(argv))
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise FreshCheckError(f"{' '.join(argv[:3])} failed: {done.stderr.strip()}")
    for path in [dest, *dest.rglob("*")]:
        os.lchown(path, uid, gid)
    return dest


def foreign_owned(clone: Path, uid: int) -> list[str]:
    """Paths of ``USER_RESULTS`` (itself included) that do not belong to ``uid`` (the folder missing: itself)."""
    folder = clone / USER_RESULTS
    if not folder.is_dir():
        return [f"{USER_RESULTS} (missing)"]
    return [str(p.relative_to(clone)) for p in (folder, *folder.rglob("*")) if p.lstat().st_uid != uid]


def recorded_commit(clone: Path) -> str:
    """The commit in the quick experiment's metadata, with its clean/dirty state."""
    try:
        git = json.loads((clone / "results" / "experiment1" / "quick" / "metadata.json").read_text())["git"]
    except (OSError, ValueError, KeyError):
        return ""
    if not git.get("commit"):
        return f"none ({git.get('error', 'unknown')})"
    return f"{git['commit']} ({'dirty' if git.get('dirty') else 'clean'})"


class FreshMachine:
    """The overlay of one run: mounted on entry; on exit, every trace removed and what was left reported."""

    def __init__(self, tree: Path, run_dir: Path, log: Callable[[str], None], keep: bool) -> None:
        self.layers = Layers.under(tree, run_dir)
        self.log = log
        self.keep = keep
        self.links_before = link_names(OUR_PREFIX)
        self.leftovers: list[str] = []

    def __enter__(self) -> FreshMachine:
        for folder in (self.layers.upper, self.layers.work, self.layers.merged):
            folder.mkdir(parents=True)
        subprocess.run(overlay_mount_command(self.layers), check=True, capture_output=True, text=True)
        # systemd-nspawn keeps per-machine state in /run/systemd/nspawn; a tmpfs of our own mount
        # namespace keeps it off the host (where /run may be a disk folder nspawn refuses to clean).
        NSPAWN_STATE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(NSPAWN_STATE)], check=True, capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        merged = self.layers.merged
        stray = processes_rooted_in(merged)
        for pid in stray:
            os.kill(pid, signal.SIGKILL)
        if stray:
            self.leftovers.append(f"{len(stray)} process(es) of the container (killed)")
        subprocess.run(["umount", str(NSPAWN_STATE)], capture_output=True, check=False)
        done = subprocess.run(["umount", str(merged)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            self.leftovers.append(f"overlay still mounted: {done.stderr.strip()}")
        mounts = mounts_under(merged.parent, Path("/proc/self/mountinfo")) + mounts_under(merged.parent)
        if mounts:
            self.leftovers.append(f"mounts: {' '.join(sorted(set(mounts)))}")
        new_links = link_names(OUR_PREFIX) - self.links_before
        if new_links:
            self.leftovers.append(f"interfaces in the host's namespace: {' '.join(sorted(new_links))}")
        if not self.keep and not mounts:
            for folder in (self.layers.upper, self.layers.work, merged):
                shutil.rmtree(folder, ignore_errors=True)
                if folder.exists():
                    self.leftovers.append(f"could not remove {folder}")


class Output:
    """Prints to the terminal and appends to the run's log."""

    def __init__(self, log_file: Path) -> None:
        self.handle: IO[str] = log_file.open("a", buffering=1)

    def __call__(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines() or [""]:
            print(line, flush=True)
            self.handle.write(line + "\n")

    def quiet(self, text: str) -> None:
        """Into the log only."""
        self.handle.write(text.rstrip("\n") + "\n")


def type_command(
    machine: FreshMachine,
    recipe: RootRecipe,
    number: int,
    command: str,
    timeout_s: float,
    out: Output,
    steps: list[StepResult],
) -> None:
    """Type ``command`` in ~/robe-lab as the user, in a fresh login shell in the machine; add its result."""
    out(f"\n=== [{number}/{len(STEPS)}] {recipe.user}@{recipe.hostname}:~/robe-lab$ {command}")
    argv = nspawn_command(machine.layers.merged, f"rl-fresh-{os.getpid()}", recipe.hostname, recipe.user,
                          f"cd ~/robe-lab && {command}")  # fmt: skip
    out.quiet("$ " + " ".join(argv))
    started = time.monotonic()
    try:
        code = run_streaming(argv, nspawn_environment(), timeout_s, out)
    except KeyboardInterrupt:
        steps.append(StepResult(command, None, time.monotonic() - started, "interrupted"))
        raise
    seconds = time.monotonic() - started
    out(f"=== [{number}/{len(STEPS)}] {command}: exit {code if code is not None else 'none (stopped)'} "
        f"after {duration(seconds)}")  # fmt: skip
    steps.append(StepResult(command, code, seconds, f"stopped after {duration(timeout_s)}" if code is None else ""))


def remove_stale_runs(logs: Path, log: Callable[[str], None]) -> None:
    """Delete the overlay layers of earlier runs that were killed (their reports and logs stay)."""
    for run_dir in sorted(logs.glob("*/")):
        try:
            pid = int((run_dir / "pid").read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists() or mounts_under(run_dir):
            continue  # still running (or mounted: never delete below a mount)
        for name in ("upper", "work", "merged"):
            if (run_dir / name).exists():
                shutil.rmtree(run_dir / name, ignore_errors=True)
                log(f"fresh-check: removed {run_dir / name}, left by a killed run")


def run_check(args: argparse.Namespace) -> int:
    """The whole check; exit status."""
    started = time.monotonic()
    commit, warning = resolve_commit(args.rev)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.logs / f"{stamp}-{commit[:8]}"
    if args.logs.exists():
        remove_stale_runs(args.logs, print)
    run_dir.mkdir(parents=True)
    (run_dir / "pid").write_text(f"{os.getpid()}\n")
    out = Output(run_dir / "fresh-check.log")
    recipe = RootRecipe()
    report = Report(commit=commit, revision=args.rev, dirty_warning=warning, recipe=recipe.describe(),
                    log=run_dir / "fresh-check.log")  # fmt: skip
    if warning:
        out(f"fresh-check: note: {warning} {commit[:12]}")
    machine: FreshMachine | None = None
    try:
        ensure_host_tools(out)
        out(f"fresh-check: Debian 12 root for recipe {recipe.key()} in {args.cache} ...")
        root = ensure_root(recipe, args.cache, out.quiet, rebuild=args.rebuild)
        report.root_line = (f"{root.folder} (built now in {duration(root.build_seconds)})" if root.built_now else
                            f"{root.folder} (cached; its build took {duration(root.build_seconds)})")  # fmt: skip
        out(f"fresh-check: root {report.root_line}")
        uid, gid = user_ids(root.tree, recipe.user)
        machine = FreshMachine(root.tree, run_dir, out.quiet, args.keep)
        with machine:
            home = machine.layers.merged / "home" / recipe.user
            clone_into(home, commit, uid, gid, out.quiet)
            report.trusted = trust_host_certificates(machine.layers.merged)
            for number, command in enumerate(STEPS, start=1):
                type_command(machine, recipe, number, command, args.step_timeout, out, report.steps)
            report.recorded_commit = recorded_commit(home / "robe-lab")
            report.foreign_owned = foreign_owned(home / "robe-lab", uid)
    except KeyboardInterrupt:
        report.interrupted = True
        out("\nfresh-check: interrupted; the container is stopped and its overlay removed")
    finally:
        if machine is not None:
            report.leftovers = machine.leftovers  # judged once the overlay is gone
        report.total_seconds = time.monotonic() - started
        out("")
        for line in report.lines():
            out(line)
        (run_dir / "report.txt").write_text("\n".join(report.lines()) + "\n")
    if report.interrupted:
        return 130
    return 0 if report.passed else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = command_parser("provision.fresh_check", __doc__)
    add = parser.add_argument
    add("--rev", default="HEAD", help="commit to check (default HEAD; uncommitted changes are never tested)")
    add("--cache", type=Path, default=DEFAULT_CACHE, help=f"where roots are cached (default {DEFAULT_CACHE})")
    add("--logs", type=Path, default=DEFAULT_LOGS, help=f"each run's report and log (default {DEFAULT_LOGS})")
    add("--rebuild", action="store_true", help="build the root again even if it is cached")
    add("--keep", action="store_true", help="keep the run's overlay (upper layer) for inspection")
    add("--step-timeout", type=float, default=1800.0, help="seconds each command may take (default 1800)")
    args = parser.parse_args(argv)
    if not args.step_timeout > 0:
        parser.error(f"--step-timeout={args.step_timeout}: must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: checks, then the run in a private mount namespace; one-line errors."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("fresh-check: needs root (debootstrap, overlay mounts, systemd-nspawn): run 'sudo make fresh-check'",
              file=sys.stderr)  # fmt: skip
        return 2
    if os.environ.get(PRIVATE_MOUNTS_ENV) != "1":
        # Mounts made from here on live in a namespace of our own: they vanish with this process,
        # however it ends, and never show in the host's mount table.
        os.environ[PRIVATE_MOUNTS_ENV] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "--",
                              sys.executable, "-m", "provision.fresh_check", *argv])  # fmt: skip
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        return run_check(args)
    except (FreshCheckError, RuntimeError, OSError, subprocess.CalledProcessError) as err:
        print(f"fresh-check: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
