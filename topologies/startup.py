"""Start-up of what a run depends on: bounded waits, and one line when something does not come up.

A Mininet host's shell, a server that announces itself with ``READY``, a probe reflector: each
must come up within a bound. When one does not, the run stops with a ``StartupError`` whose text
is one line naming what did not start and why (its exit status and the last line it wrote on
stderr), and the command-line tools print that line and exit non-zero: never a hang, never a
traceback.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

from topologies.links import LinkError
from topologies.shell import CommandError

#: How long a process may take to announce itself (Python start-up on a loaded 2-core machine
#: takes a second or two; a hung process is caught after this).
READY_TIMEOUT_S = 30.0

#: Longest error line printed; the rest is cut (the full text stays in the process's stderr file).
MAX_LINE = 400


class StartupError(RuntimeError):
    """Something a run needs did not come up; ``str()`` is one line: what, and why."""


#: What the command-line tools report as one line (``error: ...``) and exit non-zero on: a part
#: of the network or a process that did not start, a command that failed while building.
STARTUP_FAILURES: tuple[type[Exception], ...] = (StartupError, CommandError, LinkError)


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (of a traceback: the exception and its message)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def one_line(message: object, limit: int = MAX_LINE) -> str:
    """``message`` as one line: its first line and, when there are more, its last line.

    A failed command's error is "command failed ...: argv" then its stderr; a process's stderr
    ends with the exception that stopped it: the first and last lines carry what and why.
    """
    text = str(message)
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    last = last_line(text)
    line = first if last in ("", first) else f"{first.rstrip(':')}: {last}"
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read_within(read: Any, timeout_s: float) -> str | None:
    """``read()`` on a helper thread; its result, or None when it did not return within timeout."""
    box: list[str] = []
    thread = threading.Thread(target=lambda: box.append(read()), daemon=True, name="startup-read")
    thread.start()
    thread.join(timeout_s)
    return box[0] if box else None


def read_line_within(stream: Any, timeout_s: float = READY_TIMEOUT_S) -> str | None:
    """One line of ``stream`` (``""`` at its end), or None when none came within ``timeout_s``."""
    line = _read_within(stream.readline, timeout_s)
    return None if line is None else str(line)


def _stderr_text(proc: subprocess.Popen[str], stderr_file: Path | None) -> str:
    """What the (stopped) process wrote on stderr: from its pipe or from the file it went to."""
    if stderr_file is not None:
        try:
            return stderr_file.read_text(errors="replace")
        except OSError:
            return ""
    if proc.stderr is None:
        return ""
    # A child that inherited the pipe may keep it open: never wait on it for long.
    return _read_within(proc.stderr.read, 2.0) or ""


def _stop(proc: subprocess.Popen[Any], grace_s: float) -> str:
    """Let the process end by itself for ``grace_s``, then kill it; how it ended, for the message."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    if proc.poll() is not None:
        return f"exit {proc.returncode}"
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    return "stopped"


def wait_ready(
    proc: subprocess.Popen[str],
    what: str,
    ready: str,
    *,
    timeout_s: float = READY_TIMEOUT_S,
    stderr_file: Path | None = None,
) -> str:
    """Wait until ``proc``'s first line of output starts with ``ready``; return that line.

    Otherwise stop the process and raise StartupError naming ``what`` and why: it exited (with
    its status and last stderr line), it printed something else, or it said nothing within
    ``timeout_s``. Reads exactly one line, so whoever reads the output next misses nothing.
    """
    if proc.stdout is None:
        raise ValueError("wait_ready needs the process's stdout as a pipe")
    line = _read_within(proc.stdout.readline, timeout_s)
    if line is not None and line.startswith(ready):
        return line
    # It ended its output (exited) or said something else: it may still be on its way out.
    ended = _stop(proc, grace_s=0.0 if line is None else 2.0)
    if line is None:
        reason = f"no {ready!r} within {timeout_s:g} s" + ("" if ended == "stopped" else f" ({ended})")
    elif line == "":
        reason = "exited" if ended == "stopped" else f"exited {proc.returncode}"
    else:
        reason = f"printed {line.strip()[:80]!r} instead of {ready!r} ({ended})"
    detail = last_line(_stderr_text(proc, stderr_file))
    raise StartupError(one_line(f"{what} did not start: {reason}" + (f": {detail}" if detail else "")))
