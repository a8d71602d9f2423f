"""Ctrl-C while cleaning up: let the clean-up finish.

The first Ctrl-C (or SIGTERM) unwinds a run into its teardown; a second one, pressed because the
teardown takes a few seconds, used to abort the teardown half-way and leave namespaces, processes
and temporary keys behind. ``deferred_interrupts`` holds such signals while its block runs, says
so on stderr, and raises ``KeyboardInterrupt`` once the block is done (or forgets them, when the
caller is already stopping).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_active: list[list[int]] = []  # the held signals of each block in force, outermost first


@contextmanager
def deferred_interrupts(what: str = "cleaning up", *, reraise: bool = True) -> Iterator[list[int]]:
    """Hold SIGINT, SIGTERM and SIGHUP while the block runs; yields the list of held signals.

    After the block, a held signal raises ``KeyboardInterrupt`` when ``reraise`` (the run then
    stops as if it had arrived just after); inside another such block it is handed to that one
    instead, so a teardown made of several teardowns finishes all of them. Outside the main
    thread (where Python cannot install handlers) it does nothing.
    """
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def hold(signum: int, _frame: FrameType | None) -> None:
        held.append(signum)
        print(f"\n{signal.Signals(signum).name}: still {what}; it finishes first (nothing is left behind)",
              file=sys.stderr, flush=True)  # fmt: skip

    previous = {signum: signal.signal(signum, hold) for signum in DEFERRED_SIGNALS}
    _active.append(held)
    try:
        yield held
    finally:
        _active.pop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if held and _active:
        _active[-1].extend(held)  # the enclosing block decides
    elif held and reraise:
        raise KeyboardInterrupt(f"signal {signal.Signals(held[0]).name} during {what}")
