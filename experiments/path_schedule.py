"""Paths that change over time: a per-path loss/delay schedule and connections at a fixed rate.

A profile's ``[[schedule]]`` tables each set one path's loss (and optionally RTT) from a time on,
e.g. path 1 at 100 % loss from t = 20 s and at 0 % again from t = 50 s. ``Timeline`` holds them
sorted, answers what a path looks like at any time (``state_at``) and when each connection of
each strategy starts (``attempt_times``: every ``interval_s``, strategies interleaved evenly
within the interval so that they meet the same conditions). Pure: no clock, no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ScheduleError(ValueError):
    """A malformed schedule; the message names the field and value."""


@dataclass(frozen=True)
class PathChange:
    """From ``at_s`` on, path ``path`` has ``loss_pct`` loss (and ``rtt_ms`` when given)."""

    at_s: float
    path: int
    loss_pct: float
    rtt_ms: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.at_s, bool) or not isinstance(self.at_s, int | float) or self.at_s < 0:
            raise ScheduleError(f"schedule.at_s={self.at_s!r}: must be a number of seconds >= 0")
        if self.path not in (1, 2):
            raise ScheduleError(f"schedule.path={self.path!r}: must be 1 or 2")
        loss = self.loss_pct
        if isinstance(loss, bool) or not isinstance(loss, int | float) or not 0 <= loss <= 100:
            raise ScheduleError(f"schedule.loss_pct={self.loss_pct!r}: must be within 0..100")
        if self.rtt_ms is not None and not (isinstance(self.rtt_ms, int | float) and 0 <= self.rtt_ms <= 10_000):
            raise ScheduleError(f"schedule.rtt_ms={self.rtt_ms!r}: must be within 0..10000")


def parse_changes(data: Any) -> tuple[PathChange, ...]:
    """``[[schedule]]`` tables -> changes sorted by time (errors name the table's index)."""
    if not isinstance(data, list):
        raise ScheduleError("schedule: must be a list of tables ([[schedule]])")
    changes = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ScheduleError(f"schedule[{index}]: must be a table")
        unknown = sorted(set(item) - set(PathChange.__dataclass_fields__))
        if unknown:
            raise ScheduleError(f"schedule[{index}].{unknown[0]}: unknown field (known: at_s, path, loss_pct, rtt_ms)")
        try:
            changes.append(PathChange(**item))
        except TypeError as err:
            raise ScheduleError(f"schedule[{index}]: {err}") from None
        except ScheduleError as err:
            raise ScheduleError(f"schedule[{index}]: {err}") from None
    keys = [(c.at_s, c.path) for c in changes]
    if len(set(keys)) != len(keys):
        raise ScheduleError("schedule: two changes of the same path at the same time")
    return tuple(sorted(changes, key=lambda c: (c.at_s, c.path)))


@dataclass(frozen=True)
class PathState:
    """A path's loss and RTT at some time."""

    loss_pct: float
    rtt_ms: float


@dataclass(frozen=True)
class Timeline:
    """A schedule over ``duration_s`` with one connection per strategy every ``interval_s``."""

    changes: tuple[PathChange, ...]
    duration_s: float
    interval_s: float
    initial: tuple[PathState, PathState]  # paths 1 and 2 at t = 0

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= 3600:
            raise ScheduleError(f"duration_s={self.duration_s!r}: must be within (0, 3600]")
        if not 0.05 <= self.interval_s <= self.duration_s:
            raise ScheduleError(f"interval_s={self.interval_s!r}: must be within [0.05, duration_s]")
        late = [c for c in self.changes if c.at_s >= self.duration_s]
        if late:
            raise ScheduleError(f"schedule: change at {late[0].at_s} s is not before duration_s={self.duration_s}")

    def state_at(self, path: int, t_s: float) -> PathState:
        """Path ``path``'s loss and RTT at ``t_s``."""
        state = self.initial[path - 1]
        for change in self.changes:
            if change.at_s > t_s:
                break
            if change.path == path:
                state = PathState(change.loss_pct, state.rtt_ms if change.rtt_ms is None else change.rtt_ms)
        return state

    def attempt_times(self, strategies: int) -> list[list[float]]:
        """For each strategy, the start times of its connections (interleaved within the interval)."""
        count = int(self.duration_s / self.interval_s)
        step = self.interval_s
        return [[k * step + i * step / strategies for k in range(count)] for i in range(strategies)]

    def windows(self, path: int, loss_at_least: float = 100.0) -> list[tuple[float, float]]:
        """The (start, end) times during which ``path`` has at least ``loss_at_least`` % loss (the
        outages the figures shade)."""
        spans: list[tuple[float, float]] = []
        start: float | None = 0.0 if self.initial[path - 1].loss_pct >= loss_at_least else None
        for change in (c for c in self.changes if c.path == path):
            down = change.loss_pct >= loss_at_least
            if down and start is None:
                start = change.at_s
            elif not down and start is not None:
                spans.append((start, change.at_s))
                start = None
        if start is not None:
            spans.append((start, self.duration_s))
        return spans


def declared_timeline(
    changes: tuple[PathChange, ...],
    duration_s: float | None,
    interval_s: float | None,
    initial: tuple[PathState, PathState],
) -> Timeline | None:
    """A profile's time-varying run: None when it declares none (no schedule, duration or interval),
    ScheduleError when it declares only part of one or a wrong one (both experiments' profiles)."""
    if not changes and duration_s is None and interval_s is None:
        return None
    if duration_s is None or interval_s is None:
        raise ScheduleError("schedule: needs duration_s and interval_s")
    return Timeline(changes, duration_s, interval_s, initial)
