"""Experiment 2 with paths that change over time (a profile with ``[[schedule]]``, e.g. ``outage``).

A run is a sequence of *passes*, one per (repetition, strategy): each pass builds a fresh Figure 7
network with its DNS, replay, HAAP and client proxies (``experiments.experiment2.LoadWorker``; a
fresh proxy is a fresh RobE_IPS path history), plays the schedule on its access links
(``experiments.schedule_player``: path 1 = LTE, the default path; path 2 = DSL) for ``duration_s``
seconds, and loads the profile's sites in turn, one load due every ``interval_s``. wget loads one
page at a time, so a load that runs past the next due times (a stall in an outage) makes the
pass skip them: the next load starts at the first due time after it ended. Each row of
``runs.csv`` is one load (``run_id``: ``<strategy>-r<rep>-t<tick>-<site>``) with when it started
(``load_start_s``, from the pass's start), when it was due, and both paths' scheduled loss then.
Strategies run one after the other, never at once: their loads would share the CPUs, the replay
and the client's rules.

Resume: metadata.json lists the finished passes; a pass cut short is run again as a whole (the
history of its loads is part of the result), its earlier rows set aside first.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.schema import CONNECTIONS, EXPERIMENT2
from experiments import lifecycle
from experiments.lifecycle import ExperimentError
from experiments.metadata import base_metadata, write_json
from experiments.path_schedule import PathState, Timeline
from experiments.profile2 import Experiment2Profile, LoadSpec
from experiments.runs_folder import (
    check_code,
    check_profile,
    new_invocation_id,
    read_metadata,
    record_invocation,
    repair_runs_csv,
    set_aside_rows_of_unfinished_runs,
)
from experiments.schedule_player import SchedulePlayer, sleep_until
from experiments.sweep import append_row
from topologies.cleanup import owned_name
from topologies.fig3 import allow_congestion_control
from topologies.interrupts import deferred_interrupts
from webreplay.model import origin_addresses
from webreplay.tlsca import issue_server_cert, make_ca

if TYPE_CHECKING:
    from experiments.experiment2 import LoadWorker, Options

#: A load is started up to this late after its due time (the previous one's log reading included);
#: later than that, the due time is skipped.
START_SLACK_S = 0.5


@dataclass(frozen=True)
class Tick:
    """One due page load of a pass."""

    index: int
    due_s: float
    site: str


@dataclass(frozen=True)
class Pass:
    """One run of the schedule: one strategy, one repetition."""

    repetition: int
    strategy: str

    @property
    def key(self) -> str:
        """Its name in metadata.json's ``passes``."""
        return f"{self.strategy}-r{self.repetition:02d}"

    def run_id(self, tick: Tick) -> str:
        """The runs.csv id of one of its loads."""
        return f"{self.key}-t{tick.index:03d}-{tick.site}"


def plan_ticks(timeline: Timeline, sites: tuple[str, ...]) -> list[Tick]:
    """A load due every ``interval_s`` from 0 to before ``duration_s``, the sites in turn."""
    (times,) = timeline.attempt_times(1)
    return [Tick(k, t, sites[k % len(sites)]) for k, t in enumerate(times)]


def plan_passes(profile: Experiment2Profile) -> list[Pass]:
    """Every (repetition, strategy), repetitions in turn, the strategies in the profile's order within each."""
    return [Pass(rep, strategy) for rep in range(profile.repetitions) for strategy in profile.strategies]


def next_tick(ticks: list[Tick], position: int, elapsed_s: float) -> tuple[int | None, int]:
    """From ``ticks[position:]``, the index of the next tick that can still start on time at
    ``elapsed_s`` (due now or later, or at most ``START_SLACK_S`` ago) and how many were skipped."""
    skipped = 0
    while position < len(ticks):
        if ticks[position].due_s + START_SLACK_S >= elapsed_s:
            return position, skipped
        position += 1
        skipped += 1
    return None, skipped


def timeline_columns(timeline: Timeline, tick: Tick, start_s: float) -> dict[str, str]:
    """The time-varying columns of a load's row (``analysis.schema.EXPERIMENT2``)."""
    return {
        "load_start_s": f"{start_s:.4f}",
        "due_s": f"{tick.due_s:.4f}",
        "path1_loss_at_start": f"{timeline.state_at(1, start_s).loss_pct:g}",
        "path2_loss_at_start": f"{timeline.state_at(2, start_s).loss_pct:g}",
    }


def set_aside_unfinished_passes(out: Path, done: set[str]) -> list[str]:
    """Rows of passes not listed as done move aside (runs.csv and connections.csv): they run again."""
    runs_csv = out / "runs.csv"
    finished: set[str] = set()
    if runs_csv.exists():
        with runs_csv.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if Pass(int(row["repetition"] or -1), row["strategy"]).key in done:
                    finished.add(row["run_id"])
    notes = set_aside_rows_of_unfinished_runs(runs_csv, EXPERIMENT2.names, finished)
    notes += set_aside_rows_of_unfinished_runs(out / "connections.csv", CONNECTIONS.names, finished)
    return notes


class PassRunner:
    """Runs the passes of one invocation (one network at a time)."""

    def __init__(self, options: Options, invocation_id: str, work: Path, tls: dict[str, Path]) -> None:
        from experiments.experiment2 import load_sites

        self.options = options
        self.profile = options.profile
        timeline = self.profile.timeline()
        assert timeline is not None
        self.timeline = timeline
        self.ticks = plan_ticks(timeline, self.profile.sites)
        self.sites = load_sites(self.profile)
        self.addresses = origin_addresses([h for s in self.sites.values() for h in s.hosts()])
        self.invocation_id = invocation_id
        self.work = work
        self.tls = tls
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.worker: LoadWorker | None = None
        self.network: dict[str, Any] = {}  # the first pass's network as built (metadata)

    def run(self, number: int, one: Pass, stack: ExitStack) -> dict[str, Any]:
        """One pass on a fresh network (torn down by ``stack``); its counts."""
        from experiments.experiment2 import LoadWorker, build_row

        profile = self.profile
        worker = LoadWorker(number, profile, self.sites, self.addresses, self.work, self.tls, stack,
                            self.options.out, self.options.pcap)  # fmt: skip
        self.worker = worker
        if not self.network:
            self.network = worker.net.describe()

        def apply(path: int, state: PathState) -> None:
            worker.net.set_path(path, profile.path_config(path, state))

        counts: dict[str, Any] = {"ok": 0, "failed": 0, "censored": 0, "error": 0, "skipped": 0}
        player = SchedulePlayer(self.timeline, apply)
        t0 = player.start()
        try:
            position: int | None = 0
            while position is not None and not self.stop.is_set():
                position, skipped = next_tick(self.ticks, position, player.elapsed_s())
                counts["skipped"] += skipped
                if position is None:
                    break
                tick = self.ticks[position]
                sleep_until(t0 + int(tick.due_s * 1e9), self.stop)
                if self.stop.is_set():
                    break
                spec = LoadSpec(one.run_id(tick), tick.site, one.strategy, one.repetition, profile.seed + tick.index)
                start_s = player.elapsed_s()
                try:
                    row = worker.run(spec)
                except ExperimentError:
                    if self.stop.is_set():
                        break
                    raise
                except (OSError, ValueError, RuntimeError) as err:  # a broken load: an error row
                    row = build_row(spec, worker.index, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                    {"status": "error", "error": repr(err)})  # fmt: skip
                row = {**row, **timeline_columns(self.timeline, tick, start_s), "invocation": self.invocation_id}
                append_row(self.options.out / "runs.csv", row, self.lock, EXPERIMENT2)
                counts[row["status"]] += 1
                position += 1
        finally:
            self.worker = None
            # Let the schedule finish (the pass lasts duration_s) unless stopped, then reset the paths.
            sleep_until(t0 + int(self.timeline.duration_s * 1e9), self.stop)
            player.stop()
        counts["late_changes_s"] = [round(late, 3) for late, _, _ in player.applied]
        return counts

    def interrupt(self) -> None:
        """Ctrl-C: stop the pass, kill the load in flight."""
        self.stop.set()
        worker = self.worker
        if worker is not None:
            worker.interrupt()


def run_timeline(options: Options) -> int:
    """Run every pending pass of a time-varying experiment 2 profile (the folder is locked); exit status."""
    profile = options.profile
    timeline = profile.timeline()
    assert timeline is not None
    out = options.out
    runs_csv = out / "runs.csv"
    meta_file = out / "metadata.json"
    metadata = read_metadata(meta_file)
    for note in check_profile(out, metadata, profile.identity(), "loads"):
        print(note, flush=True)
    passes = plan_passes(profile)
    done = set(metadata.get("passes", {}))
    pending = [p for p in passes if p.key not in done]
    if options.limit is not None:
        pending = pending[: options.limit]
    invocation = base_metadata("experiment2", {"jobs": 1, "limit": options.limit, "out": str(out),
                                               "pcap": options.pcap, "allow_mixed": options.allow_mixed})  # fmt: skip
    invocation.update(id=new_invocation_id(), corpus_sha256=profile.corpus_hash())
    title = (f"experiment 2, profile {profile.name} (time-varying, {timeline.duration_s:g} s per strategy and "
             f"repetition, a page load every {timeline.interval_s:g} s)")  # fmt: skip
    plan = (len(passes), len(passes) - len(pending), len(pending))
    if not lifecycle.announce(title, "schedule run", plan, runs_csv, 1):
        return 0
    notes = check_code(out, metadata, invocation["git"], options.allow_mixed, "loads")
    notes += repair_runs_csv(runs_csv, EXPERIMENT2.names)
    notes += repair_runs_csv(out / "connections.csv", CONNECTIONS.names)
    notes += set_aside_unfinished_passes(out, done)
    for note in notes:
        print(note, flush=True)
    allow_congestion_control("cubic")
    started = time.monotonic()
    totals: dict[str, int] = {"ok": 0, "failed": 0, "censored": 0, "error": 0, "skipped": 0}
    interrupted = True
    work = Path(tempfile.mkdtemp(prefix=owned_name("exp2tv") + "-"))  # the CA's key: named with our PID
    runner: PassRunner | None = None
    try:
        ca = make_ca(work / "ca")
        leaf_runner = PassRunner(options, invocation["id"], work, {})
        leaf = issue_server_cert(ca, sorted(leaf_runner.addresses), work / "tls")
        leaf_runner.tls = {"ca": ca.cert, "cert": leaf.cert, "key": leaf.key}
        runner = leaf_runner
        metadata.update({"kind": "experiment2", "profile": profile.to_dict(),
                         "profile_fingerprint": profile.fingerprint(), "corpus_sha256": invocation["corpus_sha256"],
                         "origin_hosts": len(runner.addresses), "timeline": True})  # fmt: skip
        for number, one in enumerate(passes):
            if one not in pending:
                continue
            t = time.monotonic()
            with ExitStack() as stack:
                counts = runner.run(number, one, stack)
                with deferred_interrupts("tearing the network down", reraise=True):
                    stack.close()
            if runner.stop.is_set():
                break
            for key in totals:
                totals[key] += counts[key]
            if "network" not in invocation:  # the folder's rows now name this invocation
                invocation["network"] = runner.network
                record_invocation(metadata, invocation, ("git", "network"))
            metadata.setdefault("passes", {})[one.key] = {**counts, "invocation": invocation["id"],
                                                          "wall_s": round(time.monotonic() - t, 1)}  # fmt: skip
            write_json(meta_file, metadata)
            print(f"pass {one.key}: {counts} in {time.monotonic() - t:.0f} s", flush=True)
        interrupted = runner.stop.is_set()
    except KeyboardInterrupt:
        if runner is not None:
            runner.interrupt()
        print("\ninterrupted: the pass in flight runs again on resume; finished passes are kept", flush=True)
    finally:
        invocation.update(wall_time_s=round(time.monotonic() - started, 1), interrupted=interrupted,
                          counts=dict(totals))  # fmt: skip
        metadata["complete"] = all(p.key in metadata.get("passes", {}) for p in passes)
        if metadata.get("profile"):
            write_json(meta_file, metadata)
        shutil.rmtree(work, ignore_errors=True)
    print(f"loads: {totals}; results in {out}", flush=True)
    if interrupted:
        print("rerun the same command to resume", flush=True)
        return 130
    return 0 if totals["error"] == 0 else 1
