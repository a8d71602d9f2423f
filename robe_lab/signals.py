"""Signals that unwind like Ctrl-C: one handler for every long-running robe-lab process.

Python's default for SIGTERM and SIGHUP kills the process without running ``finally`` blocks or
context managers; robe-lab's processes own namespaces, emulators and servers that must be torn
down, so they turn these signals into ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
from types import FrameType


def raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    """Signal handler: raise KeyboardInterrupt naming the signal (teardown runs as after Ctrl-C)."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def unwind_on(*signums: signal.Signals) -> None:
    """Install ``raise_interrupt`` for each signal (main thread only, as Python requires)."""
    for signum in signums:
        signal.signal(signum, raise_interrupt)
