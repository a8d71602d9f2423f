"""Provenance recorded with every result: code version, machine, kernel, tools, and the run's arguments."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from analysis.ownership import hand_to_invoking_user, make_results_dir
from robe_lab.paths import project_root
from topologies.shell import run

PROJECT_ROOT = project_root()

#: Tool -> command printing its version (first line kept).
TOOL_VERSION_COMMANDS: dict[str, list[str]] = {
    "iproute2": ["ip", "-V"],
    "iptables": ["iptables", "--version"],
    "iperf3": ["iperf3", "--version"],
    "wget": ["wget", "--version"],
}


def git_summary(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Commit and whether the code differs from it (dirty; ``results/`` does not count), or why unknown.

    A dirty tree also gets ``diff_sha256``: the hash of its modifications to tracked files, so that
    two runs of the same modified code can be told from runs of different modifications.
    """
    head = run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False)
    if head.returncode != 0:
        return {"commit": None, "dirty": None, "error": head.stderr.strip()}
    # Stored results are data, not code: a run made while results/ holds new files is not "dirty".
    status = run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                 check=False)  # fmt: skip
    summary: dict[str, Any] = {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    if summary["dirty"]:
        diff = run(["git", "-C", str(root), "diff", "HEAD", "--binary", "--", ".", ":!results"], check=False)
        summary["diff_sha256"] = hashlib.sha256(diff.stdout.encode(errors="surrogateescape")).hexdigest()[:16]
    return summary


def tool_versions() -> dict[str, str]:
    """First line of each tool's version output ('missing' if it does not run)."""
    versions: dict[str, str] = {}
    for tool, argv in TOOL_VERSION_COMMANDS.items():
        proc = run(argv, check=False)
        text = (proc.stdout or proc.stderr).strip().splitlines()
        versions[tool] = text[0] if proc.returncode == 0 and text else "missing"
    try:
        import mininet.net

        versions["mininet"] = str(mininet.net.VERSION)
    except ImportError:
        versions["mininet"] = "missing"
    versions["python"] = sys.version.split()[0]
    return versions


def base_metadata(kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Metadata shared by all result folders."""
    return {
        "kind": kind,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "arguments": arguments,
        "git": git_summary(),
        "kernel": platform.release(),
        "machine": {"cpus": os.cpu_count(), "arch": platform.machine()},
        "tools": tool_versions(),
        "command": sys.argv,
    }


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically and durably: a Ctrl-C or a power cut leaves the old file or the new one,
    never half a file (written to a temporary file, fsynced, renamed, the folder fsynced); owned by
    the invoking user."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    hand_to_invoking_user(tmp)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def new_run_dir(base: Path, label: str) -> Path:
    """A fresh result folder ``base/<UTC timestamp>-<label>`` (owned by the invoking user); fails
    clearly if base is unwritable."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = base / f"{stamp}-{label}"
    if path.exists():
        raise PermissionError(f"results folder {path}: exists already")
    try:
        make_results_dir(path)
    except OSError as err:
        raise PermissionError(f"results folder {path}: cannot create it ({err.strerror})") from None
    return path
