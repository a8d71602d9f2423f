"""Result files belong to the user who ran ``sudo make ...``, not to root.

The experiments need root; their results folders, ``runs.csv``, ``metadata.json`` and figures are
handed to the invoking user (``SUDO_UID``/``SUDO_GID``, set by sudo), so that a later ``make plots``
or ``make compare`` as that user can rewrite them. Without sudo (or as plain root) nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path


def invoking_user() -> tuple[int, int] | None:
    """(uid, gid) of the user behind sudo when running as root through sudo, else None."""
    if os.geteuid() != 0:
        return None
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if not uid.isdigit() or not gid.isdigit() or int(uid) == 0:
        return None
    return int(uid), int(gid)


def hand_to_invoking_user(*paths: Path) -> None:
    """chown each existing path to the invoking user (see ``invoking_user``); no-op otherwise."""
    owner = invoking_user()
    if owner is None:
        return
    for path in paths:
        if path.exists():
            os.chown(path, *owner)


def make_results_dir(path: Path) -> Path:
    """Create ``path`` with its missing parents, each handed to the invoking user; return it."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    hand_to_invoking_user(*missing)
    return path
