"""One throw-away machine: an overlay on the cached root, commands in it under systemd-nspawn.

The cached root is the overlay's read-only lower layer; everything a run writes (packages, the
clone, .venv, results) lands in the run's own upper layer, which is deleted afterwards: a run
never changes the cache. The overlay is mounted in a private mount namespace (see
``fresh_check``), so it vanishes with the process even if that is killed.

systemd-nspawn runs each command with the host's kernel and its namespaces available: all
capabilities, writable ``/proc/sys`` and ``/sys`` (``SYSTEMD_NSPAWN_API_VFS_WRITABLE``), the host's
network (the set-up needs Debian's mirror and PyPI, which only the host's network reaches; the
topologies build their own namespaces inside), no machine registration (no systemd needed on the
host). The container's processes live in its own PID namespace and die with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layers:
    """The folders of one run's overlay."""

    lower: Path
    upper: Path
    work: Path
    merged: Path

    @classmethod
    def under(cls, lower: Path, run_dir: Path) -> Layers:
        """The layers of a run kept in ``run_dir``."""
        return cls(lower, run_dir / "upper", run_dir / "work", run_dir / "merged")


def overlay_mount_command(layers: Layers) -> list[str]:
    """Mount the overlay: the cached root read-only below, the run's writes above."""
    options = f"lowerdir={layers.lower},upperdir={layers.upper},workdir={layers.work}"
    return ["mount", "-t", "overlay", "overlay", "-o", options, str(layers.merged)]


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def extra_certificates(host_bundle: str, root_bundle: str) -> list[str]:
    """PEM certificates the host trusts beyond those of the fresh root (e.g. an HTTPS proxy's CA)."""
    known = set(_PEM.findall(root_bundle))
    return [pem for pem in dict.fromkeys(_PEM.findall(host_bundle)) if pem not in known]


def certificate_subject(pem: str) -> str:
    """The certificate's subject, e.g. ``CN=proxy-ca``."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string()


def trust_host_certificates(merged: Path, host_bundle: Path = HOST_CA_BUNDLE) -> list[str]:
    """Let the machine trust what the host trusts beyond Debian's CAs; their subjects.

    The machine uses the host's network: where that network intercepts HTTPS (this project's CI
    reaches PyPI through such a proxy), the machine must trust the proxy's CA as the host does,
    the way an administrator adds a local CA (``/usr/local/share/ca-certificates`` then
    ``update-ca-certificates``). A machine on an open network gets nothing added.
    """
    root_bundle = merged / "etc" / "ssl" / "certs" / "ca-certificates.crt"
    extra = extra_certificates(host_bundle.read_text(), root_bundle.read_text())
    if not extra:
        return []
    folder = merged / "usr" / "local" / "share" / "ca-certificates"
    folder.mkdir(parents=True, exist_ok=True)
    for number, pem in enumerate(extra):
        (folder / f"host-network-{number}.crt").write_text(pem + "\n")
    subprocess.run(["chroot", str(merged), "update-ca-certificates"], check=True, capture_output=True, text=True)
    return [certificate_subject(pem) for pem in extra]


def nspawn_command(merged: Path, machine: str, hostname: str, user: str, command: str) -> list[str]:
    """Run ``command`` in a login shell of ``user`` (a user's PATH, profile and home) in the root."""
    return [
        # SIGTERM to nspawn if fresh-check dies, even by SIGKILL: no container outlives it.
        "setpriv", "--pdeathsig", "TERM", "--",
        "systemd-nspawn", "--quiet", f"--directory={merged}", f"--machine={machine}", f"--hostname={hostname}",
        "--register=no", "--keep-unit", "--as-pid2", "--capability=all", "--resolv-conf=copy-host",
        "--console=pipe", f"--user={user}", "bash", "-lc", command,
    ]  # fmt: skip


def nspawn_environment() -> dict[str, str]:
    """systemd-nspawn's own environment: writable /proc/sys and /sys inside."""
    return {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "yes"}


@dataclass
class StepResult:
    """One command typed in the container."""

    command: str
    returncode: int | None  # None: stopped (time limit or Ctrl-C)
    seconds: float
    note: str = ""

    @property
    def passed(self) -> bool:
        """Exit status 0."""
        return self.returncode == 0


def run_streaming(argv: list[str], env: dict[str, str], timeout_s: float, emit: Callable[[str], None]) -> int | None:
    """Run argv in its own session, pass each output line to ``emit``; its exit status.

    On Ctrl-C (KeyboardInterrupt) or after ``timeout_s`` the process is stopped (SIGTERM, then
    SIGKILL) and KeyboardInterrupt re-raised / None returned. Its own session keeps a Ctrl-C at the
    terminal from reaching it before we stop it in order; if we are killed, it gets SIGTERM.
    """
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)  # fmt: skip
    timer = _Deadline(proc, timeout_s)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            emit(line.rstrip("\n"))
        proc.wait()
    except BaseException:
        stop(proc)
        raise
    finally:
        timer.cancel()
    return None if timer.fired else proc.returncode


class _Deadline:
    """Stops a process when its time is up (from a timer thread)."""

    def __init__(self, proc: subprocess.Popen[str], timeout_s: float) -> None:
        self.fired = False
        self._proc = proc
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        stop(self._proc)

    def cancel(self) -> None:
        self._timer.cancel()


def stop(proc: subprocess.Popen[str], grace_s: float = 15.0) -> None:
    """SIGTERM (nspawn then kills the container), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


def processes_rooted_in(root: Path) -> list[int]:
    """Processes whose root directory is ``root`` (left over from the container)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "root") == str(root):
                    found.append(int(entry.name))
    return found


def mounts_under(path: Path, mountinfo: Path = Path("/proc/1/mountinfo")) -> list[str]:
    """Mount points at or under ``path`` in the mount namespace of ``mountinfo`` (default: the host's)."""
    prefix = str(path)
    points = []
    with contextlib.suppress(OSError):
        for line in mountinfo.read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


def link_names(prefix: str) -> set[str]:
    """Network interfaces of the host's namespace whose name starts with ``prefix``."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    names = set()
    for line in out.splitlines():
        match = re.match(r"\d+: ([^:@]+)", line)
        if match and match.group(1).startswith(prefix):
            names.add(match.group(1))
    return names
