"""A minimal Debian 12 root, as a new user's machine has it, built once with debootstrap and cached.

The root is ``debootstrap --variant=minbase`` plus what a user needs to type the README's commands
(git, make, sudo, ca-certificates), a normal user ``robe`` with sudo rights (no password: nobody is
there to type it), the apt sources of an installed Debian 12 (main, updates, security) and empty
package lists (set-up has to run ``apt-get update`` itself). Nothing of robe-lab's own list is in
it: installing that is the job of the README's commands.

The cache folder's name carries a hash of this recipe, so a changed recipe builds a new root; a
root is built in a temporary folder and renamed when complete, under a lock, so a crashed or
concurrent build never leaves a half root where a complete one is expected.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Where roots are cached (outside any clone: a root is ~250 MB and outlives clones).
DEFAULT_CACHE = Path("/var/cache/robe-lab")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class RootRecipe:
    """How the fresh root is made; its hash names the cache folder."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    variant: str = "minbase"
    include: tuple[str, ...] = ("git", "make", "sudo", "ca-certificates")
    user: str = "robe"
    hostname: str = "fresh-debian12"

    def debootstrap_command(self, target: Path) -> list[str]:
        """The debootstrap command line that makes the base system in ``target``."""
        return [
            "debootstrap", f"--variant={self.variant}", f"--include={','.join(self.include)}",
            f"--keyring={KEYRING}", self.suite, str(target), self.mirror,
        ]  # fmt: skip

    def configure_script(self) -> str:
        """Shell script run in the new root (chroot) to make it a user's machine."""
        sources = (
            f"deb {self.mirror} {self.suite} main\\n"
            f"deb {self.mirror} {self.suite}-updates main\\n"
            f"deb {self.security_mirror} {self.suite}-security main\\n"
        )
        hosts = f"127.0.0.1 localhost\\n127.0.1.1 {self.hostname}\\n::1 localhost ip6-localhost ip6-loopback\\n"
        return "\n".join([
            "set -eu",
            f"useradd --create-home --shell /bin/bash --groups sudo {self.user}",
            f"echo '{self.user} ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/{self.user}",
            f"chmod 0440 /etc/sudoers.d/{self.user}",
            f"printf '{sources}' > /etc/apt/sources.list",
            f"echo {self.hostname} > /etc/hostname",
            f"printf '{hosts}' > /etc/hosts",
            "apt-get clean",
            "rm -rf /var/lib/apt/lists/*",
        ])  # fmt: skip

    def describe(self) -> str:
        """One line for the report."""
        return f"Debian {self.suite} debootstrap {self.variant} + {', '.join(self.include)}; user {self.user} (sudo)"

    def text(self) -> str:
        """Everything that makes the root, as text (what the cache key hashes)."""
        return "\n".join([" ".join(self.debootstrap_command(Path("TARGET"))), self.configure_script()]) + "\n"

    def key(self) -> str:
        """Short hash of the recipe."""
        return hashlib.sha256(self.text().encode()).hexdigest()[:12]


def cache_folder(cache: Path, recipe: RootRecipe) -> Path:
    """Where the root of ``recipe`` is cached: ``<cache>/fresh-root-<hash>`` (the tree is in ``root/``)."""
    return cache / f"fresh-root-{recipe.key()}"


@dataclass(frozen=True)
class CachedRoot:
    """A complete root: its tree, whether this call built it, and how long building took."""

    folder: Path
    built_now: bool
    build_seconds: float

    @property
    def tree(self) -> Path:
        """The root file system (used read-only)."""
        return self.folder / "root"


def _run_logged(argv: list[str], log: Callable[[str], None]) -> None:
    log("$ " + " ".join(argv))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        log(line.rstrip("\n"))
    if proc.wait() != 0:
        raise RuntimeError(f"{argv[0]} failed (exit {proc.returncode}); its output is in the log")


def ensure_root(recipe: RootRecipe, cache: Path, log: Callable[[str], None], rebuild: bool = False) -> CachedRoot:
    """The cached root of ``recipe``, built first if missing (or if ``rebuild``)."""
    folder = cache_folder(cache, recipe)
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find it built
        complete = folder / "built.json"
        if complete.exists() and not rebuild:
            info = json.loads(complete.read_text())
            return CachedRoot(folder, built_now=False, build_seconds=float(info["seconds"]))
        building = cache / f"{folder.name}.building"
        shutil.rmtree(building, ignore_errors=True)  # a crashed build's leftovers
        building.mkdir()
        started = time.monotonic()
        try:
            _run_logged(recipe.debootstrap_command(building / "root"), log)
            _run_logged(["chroot", str(building / "root"), "/bin/sh", "-c", recipe.configure_script()], log)
            seconds = time.monotonic() - started
            (building / "recipe.txt").write_text(recipe.text())
            (building / "built.json").write_text(json.dumps({"seconds": round(seconds, 1), "key": recipe.key(),
                                                             "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                        time.gmtime())}))  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
            building.rename(folder)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        return CachedRoot(folder, built_now=True, build_seconds=seconds)
