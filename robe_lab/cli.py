"""``robe-lab``: one command for every experiment, validation, analysis and endpoint of robe-lab.

``robe-lab <command> [options]`` runs the module behind each command with the options given (every
option of that module, also ones added later, passes through unchanged; ``robe-lab <command> --help``
shows them with their defaults). Commands that build network namespaces need root: started as a
normal user they run themselves again through ``sudo`` (results still belong to that user, see
``analysis.ownership``). ``experiment1`` and ``experiment2`` draw their figure and report at the end.
The Makefile's targets call this command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from robe_lab.cliparse import plain, program_name
from robe_lab.paths import ROOT_ENV, project_root

PROG = "robe-lab"

#: Environment variables the code reads that must survive ``sudo`` (which resets the environment).
KEPT_ENV = ("PYTHONPATH", "LINK_BACKEND", ROOT_ENV)


@dataclass(frozen=True)
class Command:
    """One subcommand: the module whose ``main(argv)`` runs it and what it needs."""

    name: str
    module: str
    summary: str
    needs_root: bool = False
    argv_prefix: tuple[str, ...] = ()  # e.g. the endpoint's own subcommand of robe.cli
    plots_after: bool = False  # draw the figure and report of the results folder at the end
    group: str = "experiments"


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("experiment1", "experiments.experiment1", "experiment 1: loss sweep on the default path (Figure 8)",
                needs_root=True, plots_after=True),
        Command("experiment2", "experiments.experiment2", "experiment 2: hybrid-access page loads (Figure 9)",
                needs_root=True, plots_after=True),
        Command("ablation", "experiments.ablation", "experiment 2's ablation: every abl-* profile, then its figure",
                needs_root=True),
        Command("validate-links", "experiments.validate_links", "measure the emulated links' RTT, loss and rate",
                needs_root=True),
        Command("validate-transport", "experiments.validate_transport",
                "every strategy's set-up times against the paper's formulas", needs_root=True),
        Command("bench", "experiments.bench_transport", "userspace transport against kernel MPTCP (goodput, CPU)",
                needs_root=True),
        Command("bench-sweep", "experiments.bench_sweep",
                "attempts/min, canary error, memory and idle CPU against 1..64 experiment 1 networks", needs_root=True),
        Command("soak", "experiments.soak", "reliability soak of the HAAP and the userspace server on loopback"),
        Command("shell", "robe_lab.shell", "a Figure 3 or 7 network to use by hand (Mininet CLI or client shell)",
                needs_root=True),
        Command("plots", "analysis.plots", "redraw every figure and report from stored results", group="results"),
        Command("compare", "analysis.compare", "overlay result folders of one experiment and test every cell",
                group="results"),
        Command("sweep-plan", "experiments.sweep_plan",
                "where a stored experiment 1 sweep spent its time; replayed wall time of other settings",
                group="results"),
        Command("record-sites", "webreplay.record", "record live pages into HAR files (needs the internet)",
                group="results"),
        Command("clean-net", "topologies.cleanup", "remove what dead robe-lab runs left (rl-* namespaces, ...)",
                needs_root=True, group="machine"),
        Command("fresh-check", "provision.fresh_check", "the README's set-up on a fresh Debian 12 root",
                needs_root=True, group="machine"),
        Command("serve", "robe.cli", "endpoint: accept connections and log their timing", argv_prefix=("serve",),
                group="endpoints"),
        Command("connect", "robe.cli", "endpoint: open one connection and print its timing record",
                argv_prefix=("connect",), group="endpoints"),
        Command("agent", "robe.cli", "endpoint: open connections requested as JSON lines on stdin",
                argv_prefix=("agent",), group="endpoints"),
        Command("serve-user", "robe.cli", "endpoint: accept userspace-transport connections",
                argv_prefix=("serve-user",), group="endpoints"),
    )
}  # fmt: skip

GROUPS = {
    "experiments": "experiments and measurements",
    "results": "stored results",
    "machine": "this machine",
    "endpoints": "RobE endpoints (as experiments start them in hosts)",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the commands (each command parses its own options)."""
    listing = "\n\n".join(
        f"{title}:\n" + "\n".join(f"  {c.name:<20}{c.summary}{' (root)' if c.needs_root else ''}"
                                  for c in COMMANDS.values() if c.group == group)
        for group, title in GROUPS.items()
    )  # fmt: skip
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=plain(__doc__.splitlines()[0]) if __doc__ else None,
        epilog=f"{listing}\n\n'{PROG} <command> --help' shows a command's options and their defaults. "
        f"(root): started as a normal user, the command runs itself again through sudo.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's options")
    return parser


def wants_help(args: Sequence[str]) -> bool:
    """Whether the command line only asks for help (no root needed for that)."""
    return any(a in ("-h", "--help") for a in args)


def sudo_argv(command: str, args: Sequence[str], environ: dict[str, str], python: str) -> list[str]:
    """The command line that runs ``robe-lab <command> args`` again as root through sudo.

    sudo resets the environment: the variables the code reads (``KEPT_ENV``) are passed through
    ``env``, the data root is named explicitly (root must find the same results folder), and Python
    writes no bytecode (no root-owned files in the user's checkout).
    """
    kept = {name: environ[name] for name in KEPT_ENV if environ.get(name)}
    kept.setdefault(ROOT_ENV, str(project_root()))
    assignments = [f"{k}={v}" for k, v in sorted(kept.items())]
    return ["sudo", "--", "env", *assignments, "PYTHONDONTWRITEBYTECODE=1", python, "-m", "robe_lab", command,
            *args]  # fmt: skip


def rerun_as_root(command: Command, args: Sequence[str]) -> int:
    """Replace this process by the same command through sudo (returns only on an error)."""
    if shutil.which("sudo") is None:
        print(f"{PROG} {command.name}: needs root (it builds network namespaces); run it as root", file=sys.stderr)
        return 2
    print(f"{PROG} {command.name}: needs root (network namespaces): running it through sudo", file=sys.stderr,
          flush=True)  # fmt: skip
    argv = sudo_argv(command.name, args, dict(os.environ), sys.executable)
    os.execvp(argv[0], argv)
    return 2  # not reached


def module_main(module: str) -> Callable[[list[str]], int]:
    """``main`` of a module, imported only when its command runs (``--help`` stays quick)."""
    main: Callable[[list[str]], int] = importlib.import_module(module).main
    return main


def results_folder(module: str, args: list[str]) -> Path | None:
    """The results folder an experiment run with ``args`` writes (its own ``parse_args`` decides)."""
    try:
        options = importlib.import_module(module).parse_args(args)
    except SystemExit:
        return None
    out = getattr(options, "out", None)
    return Path(out) if out is not None else None


def hand_folder_to_user(folder: Path) -> None:
    """Every file and folder under ``folder`` to the user behind sudo (a last pass after the plots)."""
    from analysis.ownership import hand_to_invoking_user

    hand_to_invoking_user(folder, *folder.rglob("*"))


def draw_results(command: Command, args: list[str]) -> int:
    """Figure and report of the folder an experiment just wrote (``analysis.plots``)."""
    folder = results_folder(command.module, args)
    if folder is None or not (folder / "runs.csv").exists() or not (folder / "metadata.json").exists():
        return 0
    print(f"{PROG} {command.name}: drawing the figure and report of {folder}", flush=True)
    try:
        return module_main("analysis.plots")([str(folder), "--quiet"])
    finally:
        hand_folder_to_user(folder)


def run(command: Command, args: list[str]) -> int:
    """Run one command in this process: root check, the module's main, then its figure."""
    if command.needs_root and os.geteuid() != 0 and not wants_help(args):
        return rerun_as_root(command, args)
    with program_name(PROG if command.argv_prefix else f"{PROG} {command.name}"):
        status = module_main(command.module)([*command.argv_prefix, *args])
        if command.plots_after and status in (0, 1) and not wants_help(args):
            status = max(status, draw_results(command, args))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robe-lab`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        try:
            return run(COMMANDS[argv[0]], argv[1:])
        except SystemExit as done:  # a module's argparse: --help (0) or a usage error (2)
            if isinstance(done.code, str):
                print(done.code, file=sys.stderr)
                return 1
            return 0 if done.code is None else int(done.code)
    build_parser().parse_args(argv)  # prints the help, or the usage error for an unknown command
    build_parser().print_help()
    return 2
