"""The one helper that runs shell commands: argv lists, checked return codes, useful errors.

Commands are built by small pure functions elsewhere (so they are unit-testable) and run here.
A failing command raises CommandError carrying the command line and its stderr. It lives in
``robe_lab`` (neutral ground) so that the endpoints (``robe/``) use it without depending on the
testbed; ``topologies.shell`` is the same module under its older name.
"""

from __future__ import annotations

import select
import shlex
import subprocess
from collections.abc import Sequence


class CommandError(RuntimeError):
    """A command exited non-zero (or could not start); str() shows the command and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.strip() or stdout.strip() or "(no output)"
        super().__init__(f"command failed (exit {returncode}): {shlex.join(self.argv)}\n  {detail}")


def wait_readable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` becomes readable within ``timeout_s`` seconds.

    poll(), not select(): a sweep with dozens of networks holds more than 1024 descriptors, and
    select() cannot watch a descriptor numbered 1024 or above.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0.0, timeout_s) * 1000))


def in_netns(pid: int, argv: Sequence[str]) -> list[str]:
    """Wrap argv to run in the network namespace of process ``pid`` (a Mininet node's shell)."""
    return ["nsenter", f"--net=/proc/{pid}/ns/net", "--", *argv]


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (no shell), capture output, and raise CommandError on a non-zero exit if check."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            check=False,
        )
    except FileNotFoundError as err:
        raise CommandError(argv, 127, "", f"{argv[0]}: not found ({err})") from None
    except subprocess.TimeoutExpired as err:
        raise CommandError(argv, -1, "", f"timed out after {timeout:g} s") from err
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc
