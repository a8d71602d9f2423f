"""Experiment 1 with paths that change over time (a profile with ``[[schedule]]``, e.g. ``outage``).

Each repetition is one run of ``duration_s`` seconds on one Figure 3 network: the schedule changes
the paths' loss (and RTT) at its times, and every strategy starts a connection every
``interval_s`` (strategies interleaved evenly within the interval), whether or not its earlier
connections have ended: one ``robe agent`` per strategy holds several connections at once, and
its RobE_IPS path history lives through the repetition (a fresh agent, hence a fresh history,
per repetition). Each attempt's row in ``runs.csv`` adds when it started (``attempt_start_s``,
from the repetition's start, on the machine's monotonic clock that the agent's ``connect_ns``
uses too), when it was due, path 1's scheduled loss then, the IPS mode and the path order.

Resume: a repetition with any unfinished attempt is run again as a whole (the history of its
connections is part of the result); the analysis keeps the last row of each run id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from analysis.schema import EXPERIMENT1
from experiments import lifecycle
from experiments.experiment1 import (
    DATA_GIVE_UP_S,
    SERVER_PORT,
    Options,
    ServerLog,
    build_row,
    connect_request,
    failure,
    kernel_give_up_s,
    preflight,
    start_metadata,
    start_server,
    sweep_metadata,
)
from experiments.invocation import Invocation
from experiments.lifecycle import ExperimentError
from experiments.metadata import PROJECT_ROOT
from experiments.path_schedule import Timeline
from experiments.profile import Experiment1Profile, RunSpec, expand_runs
from experiments.schedule_player import sleep_until
from experiments.sweep import SweepResult, append_row, finished_run_ids
from robe.client import ConnectionRecord, ConnectRequest
from robe.userspace_endpoints import is_userspace
from robe_lab.records import RecordError
from topologies.fig3 import Fig3Network, allow_congestion_control
from topologies.links import choose_backend
from topologies.startup import READY_TIMEOUT_S, StartupError


def timeline_row(
    row: dict[str, Any], client: ConnectionRecord, spec: RunSpec, t0_ns: int, timeline: Timeline
) -> dict[str, Any]:
    """A runs.csv row of a time-varying run: ``build_row``'s with when the attempt started and the
    scheduled state of path 1 then (``analysis.schema.EXPERIMENT1``'s time-varying columns)."""
    start_ns = client.connect_ns
    start = (start_ns - t0_ns) / 1e9 if start_ns else None
    at = start if start is not None else (spec.start_s or 0.0)
    return {
        **row,
        "attempt_start_s": "" if start is None else f"{start:.4f}",
        "due_s": f"{spec.start_s or 0.0:.4f}",
        "path1_loss_at_start": f"{timeline.state_at(1, at).loss_pct:g}",
    }


class ConcurrentAgent:
    """A ``robe agent`` with several connections in flight; answers are matched by ``conn_id``."""

    def __init__(self, net: Fig3Network, label: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        self.label = label
        self.proc = net.popen(net.client, [sys.executable, "-m", "robe", "agent"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                              cwd=PROJECT_ROOT)  # fmt: skip
        self.answers: dict[str, ConnectionRecord] = {}
        self.cond = threading.Condition()
        self.closed = False
        self.write_lock = threading.Lock()
        ready = threading.Event()
        threading.Thread(target=self._follow, args=(ready,), daemon=True).start()
        if not ready.wait(READY_TIMEOUT_S):
            self.kill()
            raise StartupError(f"robe agent ({label}) in {net.client.name} did not start within {READY_TIMEOUT_S} s")

    def _follow(self, ready: threading.Event) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "READY":
                ready.set()
                continue
            try:
                record = ConnectionRecord.from_json(line)
            except RecordError as err:  # the attempt waiting on it ends as an error row
                print(f"robe agent ({self.label}): {err}", file=sys.stderr, flush=True)
                continue
            with self.cond:
                self.answers[record.conn_id] = record
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def send(self, request: ConnectRequest) -> None:
        """Start one connection (returns at once)."""
        assert self.proc.stdin is not None
        with self.write_lock:
            self.proc.stdin.write(request.to_json() + "\n")
            self.proc.stdin.flush()

    def wait(self, conn_id: str, timeout_s: float) -> ConnectionRecord:
        """The record of ``conn_id``; an error record if the agent died or took longer than ``timeout_s``."""
        with self.cond:
            self.cond.wait_for(lambda: conn_id in self.answers or self.closed, timeout_s)
            if conn_id in self.answers:
                return self.answers.pop(conn_id)
        reason = "agent exited" if self.closed else f"no answer within {timeout_s:.0f} s"
        return failure(conn_id, f"robe agent ({self.label}): {reason}")

    def kill(self) -> None:
        """Stop the agent (connections in flight die with it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@dataclass
class Repetition:
    """One run of the timeline on one network."""

    net: Fig3Network
    profile: Experiment1Profile
    timeline: Timeline
    log: ServerLog
    timeout_s: float | None
    runs_csv: Any
    lock: threading.Lock
    invocation_id: str  # stamped on every row (metadata.json: invocations)

    def _set_paths(self, t_s: float) -> None:
        for path in (1, 2):
            self.net.set_path(path, self.profile.path_config(path, self.timeline.state_at(path, t_s)))

    def run(self, rep: int, specs: list[RunSpec], stop: threading.Event) -> dict[str, int]:
        """Run the repetition's attempts at their times; the status counts."""
        profile, timeline = self.profile, self.timeline
        self._set_paths(0.0)
        for path in (1, 2):
            self.net.path_link(path).reseed(specs[0].seed + path)
        agents = {s: ConcurrentAgent(self.net, f"{s} r{rep}") for s in profile.strategies}
        syn_retries = profile.tcp_syn_retries or 6
        cap_s = (self.timeout_s or kernel_give_up_s(syn_retries) + DATA_GIVE_UP_S) + profile.hold_ms / 1000 + 60
        counts = {"ok": 0, "failed": 0, "censored": 0, "error": 0}
        pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"r{rep}")
        futures: list[Future[None]] = []
        t0_ns = time.monotonic_ns()
        changes = iter(timeline.changes)
        change = next(changes, None)

        def collect(spec: RunSpec, conn_id: str, started_utc: str) -> None:
            client = agents[spec.strategy].wait(conn_id, cap_s)
            try:
                server = self.log.wait_request(conn_id, 5.0) if client.status == "ok" else None
                peers = {f"{client.sources[path]}:{port}" for path, port in client.local_ports.items()}
                losers = self.log.take_losers(peers)
                row = build_row(spec, 0, started_utc, client, server, losers)
            except (IndexError, ValueError) as err:  # a record that contradicts itself: an error row, rerun on resume
                client = failure(conn_id, f"unreadable record: {err!r}")
                row = build_row(spec, 0, started_utc, client, None, 0)
            row = {**timeline_row(row, client, spec, t0_ns, timeline), "invocation": self.invocation_id}
            append_row(self.runs_csv, row, self.lock, EXPERIMENT1)
            with self.lock:
                counts[row["status"]] = counts.get(row["status"], 0) + 1

        try:
            for spec in specs:
                due = t0_ns + int((spec.start_s or 0.0) * 1e9)
                # Path changes due before this attempt go first (they are rare; checking here keeps
                # one thread in charge of timing).
                while change is not None and t0_ns + int(change.at_s * 1e9) <= due:
                    sleep_until(t0_ns + int(change.at_s * 1e9), stop)
                    self._set_paths(change.at_s)
                    change = next(changes, None)
                sleep_until(due, stop)
                if stop.is_set():
                    break
                conn_id = f"{spec.run_id}-{uuid.uuid4().hex[:8]}"
                request = connect_request(profile, spec, conn_id, self.timeout_s)
                request = dataclasses.replace(request, history_scope=f"{spec.strategy}-r{rep}")
                started_utc = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                agents[spec.strategy].send(request)
                futures.append(pool.submit(collect, spec, conn_id, started_utc))
            while change is not None and not stop.is_set():
                sleep_until(t0_ns + int(change.at_s * 1e9), stop)
                self._set_paths(change.at_s)
                change = next(changes, None)
            for future in futures:
                future.result()
        finally:
            for agent in agents.values():
                agent.kill()
            pool.shutdown(wait=True, cancel_futures=True)
            self._set_paths(0.0)
        return counts


def run_timeline(options: Options) -> int:
    """Run every pending repetition of a time-varying profile; exit status like ``run_sweep``."""
    profile = options.profile
    timeline = profile.timeline()
    assert timeline is not None
    if any(is_userspace(s) for s in profile.strategies):
        raise ExperimentError("time-varying profiles run kernel strategies only")
    all_runs = expand_runs(profile)
    reps = sorted({r.repetition for r in all_runs})

    def pending() -> tuple[list[int], list[int]]:
        done = finished_run_ids(invocation.runs_csv)
        todo = [rep for rep in reps if any(r.run_id not in done for r in all_runs if r.repetition == rep)]
        stored = [rep for rep in reps if rep not in todo]
        return (todo[: options.limit] if options.limit is not None else todo), stored

    settings = {"jobs": 1, "timeout_s": options.timeout_s, "limit": options.limit, "out": str(options.out),
                "allow_mixed": options.allow_mixed}  # fmt: skip
    invocation = Invocation.begin(options.out, "experiment1", "runs", settings, profile.identity())
    title = (f"experiment 1, profile {profile.name} (time-varying, {timeline.duration_s:g} s per repetition, "
             f"a connection per strategy every {timeline.interval_s:g} s)")  # fmt: skip
    todo = invocation.plan(pending, len(reps), allow_mixed=options.allow_mixed, fields=EXPERIMENT1.names,
                           title=title, unit="repetition", jobs=1)  # fmt: skip
    if not todo:
        return 0
    backend = choose_backend()
    allow_congestion_control("cubic")
    result = SweepResult(counts={"ok": 0, "failed": 0, "censored": 0, "error": 0}, interrupted=True)
    stop = threading.Event()
    with ExitStack() as stack:
        net = stack.enter_context(Fig3Network(profile.fig3_config(profile.loss_pct[0]), backend))
        report = preflight(net, profile)
        print(f"network {net.run_tag} ready, pre-flight RTT p50 {report['path1']['p50_ms']} / "
              f"{report['path2']['p50_ms']} ms", flush=True)  # fmt: skip
        invocation.record["preflight"] = {"worker0": report}
        seeds = {"profile": profile.seed, "per_repetition": "sha256(profile seed : timeline-rNN)"}
        invocation.record.update(network=net.describe(), link_backend=backend.to_dict())
        invocation.metadata.update(sweep_metadata(profile, seeds), timeline=True)
        start_metadata(invocation.metadata, invocation.record, backend.to_dict())
        invocation.save()
        log = ServerLog()
        stack.callback(_stop, start_server(net, log, "timeline", "serve", SERVER_PORT))
        repetition = Repetition(net, profile, timeline, log, options.timeout_s, invocation.runs_csv, threading.Lock(),
                                invocation.record["id"])  # fmt: skip
        try:
            for rep in todo:
                specs = [r for r in all_runs if r.repetition == rep]
                t = time.monotonic()
                counts = repetition.run(rep, specs, stop)
                for key, value in counts.items():
                    result.counts[key] = result.counts.get(key, 0) + value
                print(f"repetition {rep}: {counts} in {time.monotonic() - t:.0f} s", flush=True)
            result.interrupted = False
        except KeyboardInterrupt:
            stop.set()
            print("\ninterrupted: the repetition in flight is dropped at resume time; finished rows are kept",
                  flush=True)  # fmt: skip
        finally:
            invocation.finish(interrupted=result.interrupted, counts=result.counts,
                              run_ids=(r.run_id for r in all_runs))  # fmt: skip
    return lifecycle.report_end(result, "runs", options.out)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
