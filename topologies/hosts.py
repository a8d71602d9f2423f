"""Mininet hosts whose shell must come up within a bound.

Mininet starts each host as ``mnexec -cdn ... bash`` on a pseudo-terminal and reads until the
shell's prompt appears. When ``mnexec`` fails (seen in a plain chroot: "remount: Invalid
argument"), the prompt never comes and Mininet waits forever on the terminal, without a word.
``BoundedHost`` waits at most ``START_TIMEOUT_S``, notices at once when the start command exits,
and raises HostStartError: one line with the host's name, the start command and what it said.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from mininet.node import Host

from topologies.shell import wait_readable
from topologies.startup import StartupError, one_line

#: Mininet's prompt sentinel (the shell runs with PS1=chr(127)).
PROMPT = chr(127)


class HostStartError(StartupError):
    """A Mininet host's shell did not come up."""


def start_command_text(argv: list[str]) -> str:
    """The start command as the error shows it: ``mnexec`` and its options (the shell part is always the same)."""
    shown = argv[: argv.index("env")] if "env" in argv else argv
    return " ".join(shown)


class BoundedHost(Host):  # type: ignore[misc]
    """A Mininet ``Host`` whose start-up fails in bounded time with a one-line HostStartError."""

    #: A shell normally prompts within tens of milliseconds; this allows a loaded 2-core machine
    #: building many networks at once.
    START_TIMEOUT_S = 20.0

    shell: Any  # Mininet's: the start command's Popen, None once stopped
    _start_deadline: float | None = None
    _start_output = ""

    def startShell(self, mnopts: str | None = None) -> None:  # noqa: N802 (Mininet's name)
        """Mininet's start-up, with every read of the prompt bounded (see ``read``)."""
        self._start_deadline = time.monotonic() + self.START_TIMEOUT_S
        self._start_output = ""
        try:
            super().startShell(mnopts)
        except HostStartError:
            self._abandon_shell()
            raise
        finally:
            self._start_deadline = None

    def read(self, size: int = 1024) -> str:
        """Mininet's read; while starting, wait (bounded) until the prompt has arrived."""
        if self._start_deadline is None:
            result: str = super().read(size)
            return result
        return self._read_prompt()

    def _read_prompt(self) -> str:
        assert self._start_deadline is not None
        fd = self.stdout.fileno()
        while True:
            left = self._start_deadline - time.monotonic()
            readable = wait_readable(fd, min(left, 0.05))
            if readable:
                self._start_output += self.decoder.decode(os.read(fd, 1024))
                if self._start_output.endswith(PROMPT):
                    output, self._start_output = self._start_output, ""
                    self._start_deadline = None
                    return output
                continue
            # Nothing to read: the start command died (what it printed has been read), or time is up.
            if self.shell.poll() is not None:
                raise self._failure(f"exited {self.shell.returncode}")
            if left <= 0:
                raise self._failure(f"gave no shell prompt within {self.START_TIMEOUT_S:g} s")

    def _failure(self, reason: str) -> HostStartError:
        said = self._start_output.replace(PROMPT, "").strip()
        command = start_command_text([str(a) for a in self.shell.args])
        detail = f": {said}" if said else " (it printed nothing)"
        return HostStartError(one_line(f"Mininet host {self.name} did not start: '{command}' {reason}{detail}"))

    def _abandon_shell(self) -> None:
        """Stop the start command and free its terminal (the host is not part of any network yet)."""
        if self.shell is not None:
            if self.shell.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.shell.pid, signal.SIGKILL)  # mnexec -d made it a group leader
                with contextlib.suppress(ProcessLookupError):
                    self.shell.kill()
            with contextlib.suppress(Exception):
                self.shell.wait(timeout=5)
        for table, stream in ((self.outToNode, self.stdout), (self.inToNode, self.stdin)):
            if stream is not None:
                table.pop(stream.fileno(), None)
        with contextlib.suppress(OSError, ValueError):
            if self.stdin is not None:
                self.stdin.close()
        with contextlib.suppress(OSError, TypeError):
            os.close(self.slave)
        self.shell = None
