"""Sweeps declared as data: experiment profiles (TOML) -> validated dataclasses -> ordered run lists.

A profile names the strategies, the loss levels on the default path, where the loss applies, the
two paths, the repetitions, the order (random, seeded) and endpoint options. ``expand_runs`` turns
it into one ``RunSpec`` per connection attempt; each run has a stable id, so a rerun can skip the
runs already stored.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from experiments.path_schedule import PathChange, PathState, ScheduleError, Timeline, declared_timeline, parse_changes
from experiments.runs_folder import ProfileIdentity, field_defaults
from robe.strategies import names
from robe_lab.paths import package_data
from robe_lab.typedconfig import ConfigError, bounds, build, did_you_mean
from topologies.fig3 import Fig3Config, PathConfig
from topologies.linkparams import LinkConfigError

PROFILE_DIR = package_data("experiments", "profiles")

#: Every strategy of the registry (robe.strategies), kernel sockets and userspace transport.
KNOWN_STRATEGIES = names()


class ProfileError(ValueError):
    """A profile is malformed; the message names the field and the value."""


def exit_on_profile_error(prog: str, err: ProfileError) -> NoReturn:
    """The one line a command prints for a bad profile, and exit status 2 (no usage, no traceback)."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    raise SystemExit(2)


@dataclass(frozen=True)
class PathSpec:
    """One path of the Figure 3 network as a profile declares it."""

    rtt_ms: float = 20.0
    rate_mbit: float | None = 10.0
    queue_packets: int = 100


@dataclass(frozen=True)
class Experiment1Profile:
    """A declared experiment 1 sweep."""

    name: str
    description: str
    strategies: tuple[str, ...]
    loss_pct: tuple[float, ...]
    loss_direction: str = "up"
    repetitions: int = 30
    order: str = "random"
    seed: int = field(default=1, metadata=bounds(0, 2**32 - 1))
    timer_s: float = 1.0
    hold_ms: int = 300
    tcp_syn_retries: int | None = None
    tcp_syn_linear_timeouts: int | None = 0
    # Common random numbers: every strategy's repetition r at a loss level gets the same link seed,
    # so strategies face the same loss pattern (variance reduction when comparing them).
    paired_seeds: bool = False
    path1: PathSpec = field(default_factory=PathSpec)
    path2: PathSpec = field(default_factory=PathSpec)
    # Paths that change over time (experiments.path_schedule): with a schedule, each repetition is one
    # run of ``duration_s`` seconds in which every strategy starts a connection every ``interval_s``.
    schedule: tuple[PathChange, ...] = ()
    duration_s: float | None = None
    interval_s: float | None = None

    def __post_init__(self) -> None:
        for strategy in self.strategies:
            if strategy not in KNOWN_STRATEGIES:
                hint = did_you_mean(strategy, [*KNOWN_STRATEGIES])
                raise ProfileError(f"strategies: unknown strategy {strategy!r}{hint} "
                                   f"(known: {', '.join(KNOWN_STRATEGIES)})")  # fmt: skip
        if not self.strategies:
            raise ProfileError("strategies=[]: name at least one strategy")
        if len(set(self.strategies)) != len(self.strategies):
            raise ProfileError(f"strategies={list(self.strategies)!r}: duplicates")
        if not self.loss_pct:
            raise ProfileError("loss_pct=[]: name at least one loss level")
        for loss in self.loss_pct:
            if isinstance(loss, bool) or not isinstance(loss, int | float) or not 0 <= loss <= 100:
                raise ProfileError(f"loss_pct: {loss!r} is outside 0..100")
        if self.loss_direction not in ("up", "down", "both"):
            raise ProfileError(f"loss_direction={self.loss_direction!r}: must be up, down or both")
        if isinstance(self.repetitions, bool) or not isinstance(self.repetitions, int) or self.repetitions < 1:
            raise ProfileError(f"repetitions={self.repetitions!r}: must be a whole number >= 1")
        if not isinstance(self.paired_seeds, bool):
            raise ProfileError(f"paired_seeds={self.paired_seeds!r}: must be true or false")
        if self.order not in ("random", "sequential"):
            raise ProfileError(f"order={self.order!r}: must be random or sequential")
        if not 0 < self.timer_s <= 60:
            raise ProfileError(f"timer_s={self.timer_s!r}: must be within (0, 60]")
        if not 0 <= self.hold_ms <= 60_000:
            raise ProfileError(f"hold_ms={self.hold_ms!r}: must be within 0..60000")
        if self.tcp_syn_retries is not None and not 1 <= self.tcp_syn_retries <= 10:
            raise ProfileError(f"tcp_syn_retries={self.tcp_syn_retries!r}: must be 1..10")
        linear = self.tcp_syn_linear_timeouts
        if linear is not None and (isinstance(linear, bool) or not isinstance(linear, int) or not 0 <= linear <= 100):
            raise ProfileError(f"tcp_syn_linear_timeouts={linear!r}: must be 0..100 (or absent for the kernel's)")
        try:
            self.fig3_config(self.loss_pct[0])
        except LinkConfigError as err:
            raise ProfileError(str(err)) from None
        if self.schedule or self.duration_s is not None or self.interval_s is not None:
            if len(self.loss_pct) != 1:
                raise ProfileError(f"loss_pct={list(self.loss_pct)!r}: with a schedule, give one level (path 1 at t=0)")
            try:
                self.timeline()
            except ScheduleError as err:
                raise ProfileError(str(err)) from None

    def timeline(self) -> Timeline | None:
        """The time-varying run of this profile, or None for a loss sweep."""
        initial = (PathState(self.loss_pct[0], self.path1.rtt_ms), PathState(0.0, self.path2.rtt_ms))
        return declared_timeline(self.schedule, self.duration_s, self.interval_s, initial)

    def path_config(self, path: int, state: PathState) -> PathConfig:
        """Path ``path`` (1 or 2) in a scheduled state (loss applies in ``loss_direction``)."""
        spec = self.path1 if path == 1 else self.path2
        return PathConfig(rtt_ms=state.rtt_ms, rate_mbit=spec.rate_mbit, loss_pct=state.loss_pct,
                          loss_direction=self.loss_direction,  # type: ignore[arg-type]  # validated
                          queue_packets=spec.queue_packets)  # fmt: skip

    def fig3_config(self, loss_pct: float, seed: int | None = None) -> Fig3Config:
        """The network for one loss level on the default path (path 1)."""
        path1 = PathConfig(
            rtt_ms=self.path1.rtt_ms,
            rate_mbit=self.path1.rate_mbit,
            loss_pct=loss_pct,
            loss_direction=self.loss_direction,  # type: ignore[arg-type]  # validated above
            queue_packets=self.path1.queue_packets,
        )
        path2 = PathConfig(
            rtt_ms=self.path2.rtt_ms, rate_mbit=self.path2.rate_mbit, queue_packets=self.path2.queue_packets
        )
        return Fig3Config(
            path1=path1,
            path2=path2,
            tcp_syn_retries=self.tcp_syn_retries,
            tcp_syn_linear_timeouts=self.tcp_syn_linear_timeouts,
            seed=self.seed if seed is None else seed,
        )

    def path1_config(self, loss_pct: float) -> PathConfig:
        """Path 1 at a given loss level (for run-time changes)."""
        return self.fig3_config(loss_pct).path1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (metadata); ``paired_seeds`` only when set, so older profiles keep their fingerprint."""
        values = asdict(self)
        if not self.paired_seeds:
            del values["paired_seeds"]
        if self.timeline() is None:
            for name in ("schedule", "duration_s", "interval_s"):
                del values[name]
        else:
            values["schedule"] = [asdict(c) for c in self.schedule]
        return values

    def fingerprint(self) -> str:
        """Hash of everything that defines the runs' conditions (a resumed sweep must match it)."""
        return self.identity().fingerprint()

    def identity(self) -> ProfileIdentity:
        """The profile as a results folder's stored one is checked against."""
        return ProfileIdentity(self.to_dict(), field_defaults(Experiment1Profile), (_digest,))


def _digest(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """One connection attempt of the sweep."""

    run_id: str
    strategy: str
    loss_pct: float
    repetition: int
    seed: int
    start_s: float | None = None  # time-varying runs: when the attempt starts, from the run's start


def parse_profile(data: dict[str, Any], source: str = "profile") -> Experiment1Profile:
    """Build a profile from parsed TOML: every field's type and range checked against the dataclass
    (``robe_lab.typedconfig``), errors naming ``source``, the field and the value."""
    try:
        values = {"description": "", **data}
        if "schedule" in values:
            # Sorted by time, duplicates refused, errors naming the table's index (path_schedule).
            values["schedule"] = [asdict(change) for change in parse_changes(values["schedule"])]
        return build(Experiment1Profile, values)
    except (ProfileError, ConfigError, LinkConfigError, ScheduleError) as err:
        raise ProfileError(f"{source}: {err}") from None


def read_profile_toml(name_or_path: str, experiment: str) -> tuple[dict[str, Any], str]:
    """The parsed TOML of ``experiments/profiles/<experiment>-<name>.toml`` (or a .toml path) and its path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{experiment}-{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem.removeprefix(f"{experiment}-") for p in PROFILE_DIR.glob(f"{experiment}-*.toml"))
        raise ProfileError(f"profile {name_or_path!r}: no such profile (known: {', '.join(known)}; or a .toml path)")
    try:
        return tomllib.loads(path.read_text()), str(path)
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{path}: not valid TOML: {err}") from None


def load_profile(name_or_path: str) -> Experiment1Profile:
    """Load ``experiments/profiles/experiment1-<name>.toml`` or a profile file path."""
    return parse_profile(*read_profile_toml(name_or_path, "experiment1"))


def expand_runs(profile: Experiment1Profile) -> list[RunSpec]:
    """Every (strategy, loss, repetition), in the profile's order, each with its own seed; for a
    time-varying profile every (repetition, strategy, connection) in start order."""
    timeline = profile.timeline()
    if timeline is not None:
        return _timeline_runs(profile, timeline)
    runs = []
    for loss in profile.loss_pct:
        for strategy in profile.strategies:
            for rep in range(profile.repetitions):
                run_id = f"{strategy}-L{loss:g}-r{rep:02d}"
                key = f"L{loss:g}-r{rep:02d}" if profile.paired_seeds else run_id
                seed = int.from_bytes(hashlib.sha256(f"{profile.seed}:{key}".encode()).digest()[:4], "big")
                runs.append(RunSpec(run_id, strategy, float(loss), rep, seed))
    if profile.order == "random":
        random.Random(profile.seed).shuffle(runs)
    return runs


def _timeline_runs(profile: Experiment1Profile, timeline: Timeline) -> list[RunSpec]:
    runs = []
    starts = timeline.attempt_times(len(profile.strategies))
    for rep in range(profile.repetitions):
        seed = int.from_bytes(hashlib.sha256(f"{profile.seed}:timeline-r{rep:02d}".encode()).digest()[:4], "big")
        for strategy, times in zip(profile.strategies, starts, strict=True):
            for k, start in enumerate(times):
                runs.append(RunSpec(f"{strategy}-r{rep:02d}-c{k:03d}", strategy, profile.loss_pct[0], rep, seed, start))
    return sorted(runs, key=lambda r: (r.repetition, r.start_s or 0.0))
