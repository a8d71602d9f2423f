"""Plays a path schedule (``experiments.path_schedule.Timeline``) on a running network, in time.

``SchedulePlayer`` sets both paths to their state at t = 0 when it starts, then a thread applies
each change at its time from the start (on the monotonic clock), whatever the caller is doing
meanwhile: a page load that is in flight when a path goes down meets the outage. ``stop`` ends the
thread and puts both paths back to their state at t = 0 (the next run starts from there).

``sleep_until`` is the runners' shared wait: to a monotonic time, in short steps, until stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from experiments.path_schedule import PathState, Timeline

#: Sets path 1 or 2 to a state (the runner turns it into the topology's ``set_path``).
ApplyPath = Callable[[int, PathState], None]


def sleep_until(t_ns: int, stop: threading.Event) -> None:
    """Return at monotonic time ``t_ns`` or as soon as ``stop`` is set."""
    while not stop.is_set():
        left = (t_ns - time.monotonic_ns()) / 1e9
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


class SchedulePlayer:
    """Applies a timeline's changes at their times from ``start``; a context manager."""

    def __init__(self, timeline: Timeline, apply: ApplyPath) -> None:
        self.timeline = timeline
        self.apply = apply
        self.t0_ns = 0
        self.applied: list[tuple[float, int, float]] = []  # (late by s, path, loss) of each change
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Set both paths to t = 0, start the clock and the thread; returns the start (monotonic ns)."""
        for path in (1, 2):
            self.apply(path, self.timeline.state_at(path, 0.0))
        self.t0_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._play, name="schedule", daemon=True)
        self._thread.start()
        return self.t0_ns

    def elapsed_s(self) -> float:
        """Seconds since ``start``."""
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def _play(self) -> None:
        try:
            for change in self.timeline.changes:
                due = self.t0_ns + int(change.at_s * 1e9)
                sleep_until(due, self._stop)
                if self._stop.is_set():
                    return
                self.apply(change.path, self.timeline.state_at(change.path, change.at_s))
                self.applied.append(((time.monotonic_ns() - due) / 1e9, change.path, change.loss_pct))
        except BaseException as err:  # reported by stop(): a path left in the wrong state spoils the run
            self.error = err

    def stop(self) -> None:
        """End the thread, put both paths back to t = 0; re-raise what the thread met."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for path in (1, 2):
            self.apply(path, self.timeline.state_at(path, 0.0))
        if self.error is not None:
            raise RuntimeError(f"schedule: applying a change failed: {self.error!r}") from self.error

    def __enter__(self) -> SchedulePlayer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
