"""The outer shell of every runner (both sweeps, the shell): signals, one-line errors, exit status.

A runner's ``main`` parses its options, then hands its body to ``run_guarded``: SIGTERM (and
SIGINT, which a shell starting us in the background leaves ignored) unwinds like Ctrl-C; an
expected failure (bad set-up, a part that did not start) is one line and exit status 2; an
interruption is one line and 130. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from robe_lab.signals import unwind_on
from topologies.startup import one_line


def run_guarded(
    body: Callable[[], int],
    *,
    failures: tuple[type[Exception], ...],
    prefix: str = "",
    interrupted: str = "interrupted; every finished row is kept and nothing was left behind",
) -> int:
    """Run ``body`` with Ctrl-C and SIGTERM unwinding; its status, 2 for ``failures``, 130 if interrupted.

    ``prefix`` starts every message (e.g. ``"experiment2: "``).
    """
    unwind_on(signal.SIGTERM, signal.SIGINT)
    try:
        return body()
    except failures as err:
        print(f"{prefix}error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}{interrupted}", file=sys.stderr)
        return 130
