"""Experiment 1 (the paper's section 3.1): connection set-up time against loss on the default path.

``python -m experiments.experiment1 --profile quick -j 4`` runs every (strategy, loss level,
repetition) of a profile as one connection attempt with the ``robe`` endpoints on Figure 3:

- ``-j N`` independent Figure 3 networks (workers), each with its own server, run attempts in
  parallel; before each attempt the worker sets path 1's loss and reseeds its loss generators
  with the run's seed, so an attempt's losses do not depend on which worker ran it or what ran
  before;
- each attempt appends one row to ``runs.csv`` as soon as it ends (Ctrl-C keeps every finished
  row, tears the networks down and marks the metadata interrupted); rerunning the same command
  skips finished runs (resume), reruns a row cut short, and refuses a folder made with a different
  profile, or (without ``--allow-mixed``) by different code, or in use by another runner
  (``experiments.runs_folder``); it first removes what dead runs left behind (``topologies.cleanup``);
- a run fails when the kernel gives up (its own SYN retries) and is censored only with
  ``--timeout``; ``metadata.json`` holds the profile, the code version, kernel, sysctls, link
  backend and its latest validation, a pre-flight RTT check of every worker's paths, and seeds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.schema import EXPERIMENT1
from analysis.stats import percentile
from experiments import lifecycle
from experiments.canary import TOLERANCE_MS, Canary, count_flagged, worst
from experiments.canary import row_fields as canary_row
from experiments.cluster import ClusterSpec, parse_cluster
from experiments.invocation import Invocation
from experiments.lifecycle import EXPECTED_FAILURES, ExperimentError, run_guarded
from experiments.metadata import PROJECT_ROOT
from experiments.profile import (
    Experiment1Profile,
    RunSpec,
    expand_runs,
    load_profile,
)
from experiments.runs_folder import (
    record_invocation,
)
from experiments.schedule import expected_attempt_s, order_long_first
from experiments.sweep import Sweep, SweepResult, pending_runs, run_then_tear_down
from experiments.validate_links import ProbeRound
from robe.client import ConnectionRecord, ConnectRequest
from robe.serverlog import Closed, Loser, Request, read_record
from robe.userspace_endpoints import is_userspace
from robe_lab.cliparse import command_parser
from topologies import linkcounters
from topologies.cleanup import clean
from topologies.fig3 import CLIENT_A1, CLIENT_A2, SERVER_B1, Fig3Network, allow_congestion_control
from topologies.interrupts import deferred_interrupts
from topologies.links import BackendChoice, choose_backend
from topologies.shell import in_netns, run, wait_readable
from topologies.startup import READY_TIMEOUT_S, StartupError, wait_ready

RESULTS_BASE = PROJECT_ROOT / "results" / "experiment1"
SERVER_PORT = 5001
USERSPACE_PORT = 5003
#: Attempts expected to end within this many seconds are busy all along (no back-off to wait in):
#: at most ``--short-slots`` of them run at once (make bench-sweep: the host's timing error grows
#: with the number of attempts running back to back, not with the number of networks).
SHORT_ATTEMPT_S = 2.0
#: Linux gives up retransmitting data after tcp_retries2=15 back-offs: about 924.6 s.
DATA_GIVE_UP_S = 925.0
#: Columns of runs.csv (their types and meanings: ``analysis.schema.EXPERIMENT1``).
ROW_FIELDS = EXPERIMENT1.names


# ---------------------------------------------------------------------------------------------
# Pure pieces: command lines, row building, resume bookkeeping.


def connect_request(
    profile: Experiment1Profile, spec: RunSpec, conn_id: str, timeout_s: float | None
) -> ConnectRequest:
    """The ``robe agent`` request of one attempt."""
    return ConnectRequest(
        conn_id=conn_id,
        strategy=spec.strategy,
        server=f"{SERVER_B1}:{USERSPACE_PORT if is_userspace(spec.strategy) else SERVER_PORT}",
        sources=[CLIENT_A1, CLIENT_A2],
        timer_s=profile.timer_s,
        hold_s=profile.hold_ms / 1000,
        timeout_s=timeout_s,
        # RobE_IPS learns per strategy and loss level only: an attempt never learns from another
        # strategy's connections or from a different condition.
        history_scope=f"{spec.strategy}-L{spec.loss_pct:g}",
    )


def kernel_give_up_s(syn_retries: int) -> float:
    """How long connect() keeps retrying SYNs before ETIMEDOUT (initial RTO 1 s, doubling)."""
    return float(2 ** (syn_retries + 1) - 1)


def _ms(later: int | None, earlier: int | None) -> str:
    if later is None or earlier is None:
        return ""
    return f"{(later - earlier) / 1e6:.3f}"


def build_row(
    spec: RunSpec,
    worker: int,
    started_utc: str,
    client: ConnectionRecord,
    server: Request | None,
    losers: int,
    server_closed: Closed | None = None,
) -> dict[str, Any]:
    """One tidy runs.csv row from the client's record and the server's log of the same connection.

    ``server_closed`` is the userspace server's record of the connection's end, with the time each
    subflow became ready for data at the server (the kernel server cannot see its subflows).
    """
    t0 = client.connect_ns or None
    status, error = client.status, client.error
    if status == "ok" and server is None:
        status, error = "error", "server logged no request for this connection"
    winner = client.winner
    winner_local = None
    if winner is not None:
        winner_local = f"{client.sources[winner]}:{client.local_ports[winner]}"
    joined = [s for s in client.subflows if s.local != winner_local]
    retrans = client.syn_retransmits
    measured = server is not None and status == "ok"
    return {
        "run_id": spec.run_id,
        "conn_id": client.conn_id,
        "strategy": spec.strategy,
        "loss_pct": f"{spec.loss_pct:g}",
        "repetition": spec.repetition,
        "seed": spec.seed,
        "worker": worker,
        "status": status,
        "setup_ms": _ms(server.first_bytes_ns, t0) if server is not None and measured else "",
        "accept_ms": _ms(server.accept_ns, t0) if server is not None and measured else "",
        "established_ms": _ms(client.established_ns, t0),
        "reply_ms": _ms(client.reply_ns, t0),
        "winner_path": "" if winner is None else winner + 1,
        "fallback_tcp": "" if client.fallback_tcp is None else int(client.fallback_tcp),
        "server_mptcp": "" if server is None or server.mptcp is None else int(server.mptcp),
        "syn_retransmits_path1": retrans.get(0, ""),
        "syn_retransmits_path2": retrans.get(1, ""),
        "joined_subflows": len(joined),
        "subflow_ready_ms": ";".join(_ms(s.t_ns, t0) for s in joined),
        "losers_accepted": losers,
        "error": error,
        "started_utc": started_utc,
        "server_subflow_ready_ms": ";".join(
            _ms(s.t_ns, t0)
            for s in (server_closed.subflows_ready if server_closed is not None else [])
            if server is not None and s.peer != server.peer
        ),
        "invocation": "",  # set by the sweep (the runner's invocation id)
        # Set by Worker.run (canary, attempt time, machine) and by a cluster (engine worker, retries).
        "canary_ms": "",
        "canary_flagged": "",
        "attempt_s": "",
        "host": "",
        "kernel": "",
        "engine_worker": "",
        "retries": "",
        **cost_columns(client),
        # Set by experiments.timevarying for runs whose paths change over time; empty in a sweep.
        "attempt_start_s": "",
        "due_s": "",
        "path1_loss_at_start": "",
        "ips_mode": client.ips_mode,
        "path_order": ";".join(str(p + 1) for p in client.path_order),
        **linkcounters.NO_COLUMNS,  # the worker counts the wire (Worker.run)
    }


def failure(conn_id: str, error: str) -> ConnectionRecord:
    """The client's record of an attempt that was not made or not answered (an error row)."""
    record = ConnectionRecord.failure(conn_id, error)
    record.ips_mode = ""
    return record


def cost_columns(client: ConnectionRecord) -> dict[str, Any]:
    """What one connection cost beyond a single handshake, from the client's own record (empty for a
    record without its race, e.g. an agent that died)."""
    if client.status == "error" and not client.events:
        return {"attempts": "", "resets_sent": "", "subflows_end": ""}
    return {
        "attempts": client.count("attempt"),
        "resets_sent": client.count("reset"),
        "subflows_end": len(client.subflows),
    }


# ---------------------------------------------------------------------------------------------
# Workers: one Figure 3 network, one server, attempts one after another.


@dataclass
class ServerLog:
    """The server's records (``robe.serverlog``), indexed for the attempts that wait on them."""

    requests: dict[str, Request] = field(default_factory=dict)
    ends: dict[str, Closed] = field(default_factory=dict)  # userspace "closed" records
    losers: list[Loser] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False

    def follow(self, stream: Any) -> None:
        """Reader thread body: read records until the server exits (a line that is not one ends the
        log: the attempts waiting on it become error rows)."""
        try:
            for line in stream:
                if not line.startswith("{"):
                    continue
                record = read_record(line)
                with self.cond:
                    if isinstance(record, Request):
                        self.requests[record.conn] = record
                    elif isinstance(record, Loser):
                        self.losers.append(record)
                    elif isinstance(record, Closed) and record.userspace:
                        self.ends[record.conn] = record
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def wait_request(self, conn_id: str, timeout_s: float) -> Request | None:
        """The server's record of ``conn_id``, waiting up to ``timeout_s``."""
        with self.cond:
            self.cond.wait_for(lambda: conn_id in self.requests or self.closed, timeout_s)
            return self.requests.pop(conn_id, None)

    def wait_end(self, conn_id: str, timeout_s: float) -> Closed | None:
        """The userspace server's end-of-connection record of ``conn_id``, waiting up to ``timeout_s``."""
        with self.cond:
            self.cond.wait_for(lambda: conn_id in self.ends or self.closed, timeout_s)
            return self.ends.pop(conn_id, None)

    def take_losers(self, peers: set[str]) -> int:
        """Count (and forget) loser sockets from the given client address:port pairs."""
        with self.cond:
            mine = [r for r in self.losers if r.peer in peers]
            self.losers = [r for r in self.losers if r.peer not in peers]
            return len(mine)


def start_server(net: Fig3Network, log: ServerLog, label: str, command: str, port: int) -> subprocess.Popen[str]:
    """``robe serve`` (or ``serve-user``) in the server host, its lines followed into ``log``."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    argv = [sys.executable, "-m", "robe", command, "--bind", SERVER_B1, "--port", str(port)]
    server = net.popen(net.server, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=env, cwd=PROJECT_ROOT)  # fmt: skip
    assert server.stdout is not None
    wait_ready(server, f"{label}: robe {command} in {net.server.name}", "LISTENING")
    threading.Thread(target=log.follow, args=(server.stdout,), daemon=True).start()
    return server


class ClientAgent:
    """A long-lived ``robe agent`` in the client host: one request line in, one record line out."""

    def __init__(self, net: Fig3Network) -> None:
        self.net = net
        self.proc: subprocess.Popen[str] | None = None
        self._buffer = b""

    def start(self) -> None:
        """Start the agent and wait until it is ready (so start-up never overlaps a timed attempt)."""
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        self._buffer = b""
        self.proc = self.net.popen(self.net.client, [sys.executable, "-m", "robe", "agent"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                   cwd=PROJECT_ROOT)  # fmt: skip
        try:
            answer = self._read_line(READY_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as err:
            self.kill()
            raise StartupError(f"robe agent in {self.net.client.name} did not start: {err}") from None
        if answer != b"READY":
            self.kill()
            raise StartupError(f"robe agent in {self.net.client.name} did not start: printed {answer[:80]!r}")

    def _read_line(self, timeout_s: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not wait_readable(fd, left):
                raise TimeoutError(f"robe agent gave no answer within {timeout_s:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("robe agent exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def request(self, message: ConnectRequest, timeout_s: float) -> ConnectionRecord:
        """Send one request; its record, or TimeoutError/RuntimeError (the agent is then restarted;
        an answer that is not a record: RecordError)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(message.to_json() + "\n")
            self.proc.stdin.flush()
            line = self._read_line(timeout_s)
        except (OSError, TimeoutError, RuntimeError):
            self.kill()
            raise
        return ConnectionRecord.from_json(line)

    def kill(self) -> None:
        """Stop the agent (a connection in flight dies with it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


class Worker:
    """One Figure 3 network with a running ``robe serve`` and ``robe agent``; runs attempts in turn."""

    def __init__(
        self, index: int, net: Fig3Network, profile: Experiment1Profile, timeout_s: float | None,
        short_slots: threading.Semaphore | None = None,
    ) -> None:  # fmt: skip
        self.index = index
        self.short_slots = short_slots
        self.net = net
        self.profile = profile
        self.timeout_s = timeout_s
        self.loss: float | None = None
        self.log = ServerLog()
        # What each attempt puts on the client's access links (the cost of robustness).
        self.counters = linkcounters.LinkCounters(lambda argv: run(in_netns(net.client.pid, argv)).stdout, ("a1", "a2"))
        self.counters.install()
        self.agent = ClientAgent(net)
        self.agent.start()
        # Both servers log into the same ServerLog: connection ids are unique.
        self.servers = [self._start_server(index, "serve", SERVER_PORT)]
        if any(is_userspace(s) for s in profile.strategies):
            self.servers.append(self._start_server(index, "serve-user", USERSPACE_PORT))
        syn_retries = profile.tcp_syn_retries or int(
            net.describe()["sysctls"]["client"].get("net.ipv4.tcp_syn_retries", "6")
        )
        # The attempt must end on its own (--timeout, or the kernel giving up on the SYN and then on
        # the request's retransmissions); this cap only catches a hung agent and is reported as an
        # error row, never as a result.
        kernel_limit = kernel_give_up_s(syn_retries) + DATA_GIVE_UP_S
        self.hard_cap_s = (timeout_s or kernel_limit) + profile.hold_ms / 1000 + 60
        self.canary = canary_for(net, profile, f"worker {index}")
        self.preflight_report: dict[str, Any] = {}
        #: Where the rows were measured (a cluster's rows come from several machines).
        self.place = {"host": socket.gethostname(), "kernel": platform.release(), "engine_worker": "", "retries": 0}

    def _start_server(self, index: int, command: str, port: int) -> subprocess.Popen[str]:
        return start_server(self.net, self.log, f"worker {index}", command, port)

    def run(self, spec: RunSpec) -> dict[str, Any]:
        """One attempt between two canary bursts; the row carries the canary error and the attempt's time."""
        started = time.monotonic()
        # The previous attempt ended with resets; let its last packets leave the links first, so
        # that the reseeded loss generators see this attempt's packets only (paired seeds rely on it).
        time.sleep(max(self.profile.path1.rtt_ms, self.profile.path2.rtt_ms) / 1000)
        profile = self.profile
        busy_all_along = (
            expected_attempt_s(
                spec.strategy,
                spec.loss_pct,
                syn_retries=profile.tcp_syn_retries,
                timer_s=profile.timer_s,
                hold_s=profile.hold_ms / 1000,
            )
            < SHORT_ATTEMPT_S
        )
        slot = self.short_slots if busy_all_along and self.short_slots is not None else contextlib.nullcontext()
        with slot:  # an attempt expected to be short waits for a slot; the canary runs inside it
            before = self.canary.measure()
            row = self._attempt(spec)
            after = self.canary.measure()
        return {**row, **canary_row(worst(before, after)), "attempt_s": f"{time.monotonic() - started:.3f}",
                **self.place}  # fmt: skip

    def _attempt(self, spec: RunSpec) -> dict[str, Any]:
        """One attempt: set the loss, reseed the links, connect, join both logs into a row."""
        if self.loss != spec.loss_pct:
            self.net.set_path(1, self.profile.path1_config(spec.loss_pct))
            self.loss = spec.loss_pct
        for path in (1, 2):
            self.net.path_link(path).reseed(spec.seed + path)
        self.net.check_links()
        conn_id = f"{spec.run_id}-{uuid.uuid4().hex[:8]}"
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        wire_before = self.counters.reading()
        try:
            client = self.agent.request(connect_request(self.profile, spec, conn_id, self.timeout_s), self.hard_cap_s)
        except (TimeoutError, RuntimeError, OSError) as err:  # an unreadable answer: the sweep's error row
            return build_row(spec, self.index, started, failure(conn_id, str(err)), None, 0)
        if client.status == "error":
            return build_row(spec, self.index, started, client, None, 0)
        server = self.log.wait_request(conn_id, 5.0) if client.status == "ok" else None
        peers = {f"{client.sources[path]}:{port}" for path, port in client.local_ports.items()}
        losers = self.log.take_losers(peers)
        # The client aborts its subflows after the hold: the server's end record follows within an RTT.
        end = self.log.wait_end(conn_id, 2.0) if server is not None and server.userspace else None
        # The client's resets left with the abort; the wire counts up to here (the server's answers
        # to them, if any, arrive within an RTT and fall into the next attempt's sleep).
        wire = linkcounters.difference(wire_before, self.counters.reading())
        return {**build_row(spec, self.index, started, client, server, losers, end), **wire.columns()}

    def interrupt(self) -> None:
        """Kill the attempt in flight (Ctrl-C)."""
        self.agent.kill()


def start_worker(
    index: int, profile: Experiment1Profile, backend: BackendChoice, timeout_s: float | None, stack: ExitStack,
    short_slots: threading.Semaphore | None = None,
) -> tuple[Worker, dict[str, Any]]:  # fmt: skip
    """Build one Figure 3 network (torn down by ``stack``), check its paths, start its endpoints."""
    net = stack.enter_context(Fig3Network(profile.fig3_config(0.0), backend))
    report = preflight(net, profile)
    return Worker(index, net, profile, timeout_s, short_slots), report


def canary_for(net: Fig3Network, profile: Experiment1Profile, label: str) -> Canary:
    """The worker's timing canary, on path 2 (experiment 1 never puts loss there)."""
    return Canary(net, CLIENT_A2, SERVER_B1, profile.path2.rtt_ms, label)


def preflight(net: Fig3Network, profile: Experiment1Profile, probes: int = 100) -> dict[str, Any]:
    """RTT of both paths at 0 % loss before the sweep; ExperimentError if off by more than 1 ms."""
    net.set_path(1, profile.path1_config(0.0))
    rounds = ProbeRound(net)
    try:
        results = {p: ProbeRound.result(rounds.send(p, 20 + p, probes, 5.0)) for p in (1, 2)}
    finally:
        rounds.received()
    report: dict[str, Any] = {}
    for path, configured in ((1, profile.path1.rtt_ms), (2, profile.path2.rtt_ms)):
        rtts = results[path].rtt_ms
        if len(rtts) < probes * 0.9:
            raise ExperimentError(f"pre-flight: path {path} answered {len(rtts)}/{probes} probes at 0 % loss")
        p50 = percentile(rtts, 50)
        report[f"path{path}"] = {"configured_rtt_ms": configured, "p50_ms": round(p50, 3),
                                 "p99_ms": round(percentile(rtts, 99), 3), "replies": len(rtts)}  # fmt: skip
        if abs(p50 - configured) > 1.0:
            raise ExperimentError(f"pre-flight: path {path} RTT p50 {p50:.2f} ms, configured {configured} ms")
    return report


# ---------------------------------------------------------------------------------------------
# The sweep.


@dataclass
class Options:
    """Command-line options after validation."""

    profile: Experiment1Profile
    out: Path
    jobs: int
    timeout_s: float | None
    limit: int | None
    allow_mixed: bool = False
    schedule: str = "long-first"
    cluster: ClusterSpec | None = None
    allow_mixed_hosts: bool = False
    short_slots: int = 6


def latest_link_validation(backend: str) -> dict[str, Any] | None:
    """The newest stored ``make validate-links`` result for ``backend`` (figures and folder)."""
    folders = sorted((PROJECT_ROOT / "results" / "link-validation").glob(f"*-{backend}"))
    for folder in reversed(folders):
        try:
            checks = json.loads((folder / "validation.json").read_text())
        except (OSError, ValueError):
            continue
        return {
            "folder": str(folder.relative_to(PROJECT_ROOT)),
            "passed": all(c["ok"] for c in checks),
            "checks": {f"L{c['loss_level']:g}/path{c['path']}/{c['metric']}": round(c["measured"], 3) for c in checks},
        }
    return None


def sweep_metadata(profile: Experiment1Profile, seeds: dict[str, Any]) -> dict[str, Any]:
    """What metadata.json says about a sweep's conditions (profile, seeds); the link validation, the
    network as built and the link backend come with each invocation (``start_metadata``)."""
    return {
        "kind": "experiment1",
        "profile": profile.to_dict(),
        "profile_fingerprint": profile.fingerprint(),
        "seeds": seeds,
    }  # fmt: skip


def check_before_building(options: Options) -> None:
    """Root, MPTCP and a writable results folder (``experiments.lifecycle``), before any network."""
    lifecycle.check_before_building("experiment1", options.out)


def run_sweep(options: Options) -> int:
    """Check, lock the results folder, then run every pending attempt (``_run_locked``); exit status."""
    # Each network holds about 20 descriptors (pipes, ptys, taps): 64 of them exceed the usual soft
    # limit of 1024, so raise it to the hard limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return lifecycle.run_in_folder("experiment1", options.out, lambda: _run_locked(options))


def _pending(options: Options, runs_csv: Path) -> tuple[list[RunSpec], set[str]]:
    """The runs still to make, in the order they run (``--schedule``), and the finished ids."""
    specs = expand_runs(options.profile)
    if options.schedule == "long-first":
        profile = options.profile
        specs = order_long_first(specs, syn_retries=profile.tcp_syn_retries, timer_s=profile.timer_s,
                                 hold_s=profile.hold_ms / 1000)  # fmt: skip
    return pending_runs(specs, runs_csv, options.limit)


def _record(options: Options, invocation: Invocation, result: SweepResult) -> None:
    """The invocation's outcome and the canary's count of flagged rows in the metadata (saved)."""
    runs_csv = invocation.runs_csv
    flags = EXPERIMENT1.read(runs_csv)["canary_flagged"] if runs_csv.exists() else pd.Series(dtype="boolean")
    flagged, measured = count_flagged(flags)
    invocation.record["canary"] = {"flagged_rows": flagged, "rows_with_canary": measured,
                                   "tolerance_ms": TOLERANCE_MS}  # fmt: skip
    invocation.finish(interrupted=result.interrupted, counts=result.counts, unwritten=result.unwritten,
                      run_ids=(spec.run_id for spec in expand_runs(options.profile)))  # fmt: skip


def start_metadata(metadata: dict[str, Any], invocation: dict[str, Any], backend: dict[str, Any]) -> None:
    """Link validation, the folder's first code/network/backend, this invocation (written now)."""
    metadata["link_validation"] = latest_link_validation(backend["backend"])
    # The folder's first code and network stay on top (a cluster's network is known only later).
    record_invocation(metadata, invocation, [key for key in ("git", "network", "link_backend") if key in invocation])


def _run_here(options: Options, pending: list[RunSpec], invocation: Invocation) -> SweepResult:
    """The sweep on this machine: one thread per Figure 3 network."""
    profile = options.profile
    backend = choose_backend()
    allow_congestion_control("cubic")

    def start(stack: ExitStack) -> Callable[[], SweepResult]:
        short_slots = threading.BoundedSemaphore(options.short_slots)

        def build(index: int) -> Worker:
            worker, report = start_worker(index, profile, backend, options.timeout_s, stack, short_slots)
            print(f"worker {index}: network {worker.net.run_tag} ready, pre-flight RTT p50 "
                  f"{report['path1']['p50_ms']} / {report['path2']['p50_ms']} ms", flush=True)  # fmt: skip
            invocation.record.setdefault("preflight", {})[f"worker{index}"] = report
            return worker

        # The first network is built before the sweep starts (its description goes into the
        # metadata); the others while the first attempts already run.
        first = build(0)
        invocation.record.update(network=first.net.describe(), link_backend=backend.to_dict())
        start_metadata(invocation.metadata, invocation.record, backend.to_dict())
        invocation.save()
        more = (build(index) for index in range(1, min(options.jobs, len(pending))))
        sweep: Sweep[Worker, RunSpec] = Sweep(
            [first], more_workers=more, run=Worker.run,
            error_row=lambda worker, spec, err: build_row(spec, worker.index, "", failure("", repr(err)), None, 0),
            runs_csv=invocation.runs_csv, schema=EXPERIMENT1, desc=f"experiment1/{profile.name}", unit="run",
            interrupt=Worker.interrupt, join_timeout_s=30.0, row_stamp={"invocation": invocation.record["id"]},
        )  # fmt: skip
        return lambda: sweep.execute(pending)

    return run_then_tear_down(start, lambda result: _record(options, invocation, result))


_PROCESS_SHORT_SLOTS: dict[int, threading.BoundedSemaphore] = {}


def _build_on_worker(
    profile: Experiment1Profile, timeout_s: float | None, short_slots: int, index: int, stack: ExitStack
) -> Worker:
    """A cluster worker's network (``experiments.cluster.NetworkPool`` calls it on first need); the
    short-attempt slots are per worker process (one machine's CPUs)."""
    slots = _PROCESS_SHORT_SLOTS.setdefault(short_slots, threading.BoundedSemaphore(short_slots))
    worker, report = start_worker(index, profile, choose_backend(), timeout_s, stack, slots)
    worker.preflight_report = report
    return worker


def _describe_workers_networks() -> list[dict[str, Any]]:
    """Run on each cluster worker: its networks' pre-flight figures, and one network's description."""
    from experiments.cluster import _pool

    workers = [w for w in _pool().all_items() if isinstance(w, Worker)]
    return [{"preflight": w.preflight_report, **({"network": w.net.describe()} if i == 0 else {})}
            for i, w in enumerate(workers)]  # fmt: skip


def _run_on_cluster(options: Options, pending: list[RunSpec], run: Invocation) -> SweepResult:
    """The sweep on a Dask cluster (``experiments.cluster``): the workers own the networks, the
    driver writes the rows."""
    from experiments.cluster import ClusterError, DaskSweep, check_hosts, connect, host_facts

    assert options.cluster is not None
    profile = options.profile
    metadata, invocation = run.metadata, run.record
    result = SweepResult(counts={}, interrupted=True)
    try:
        with connect(options.cluster, options.jobs) as client:
            facts = client.run(host_facts)
            shared = check_hosts(facts, options.allow_mixed_hosts, invocation["git"], options.allow_mixed)
            print(f"cluster {options.cluster.describe()}: {len(facts)} worker(s) on {', '.join(shared['hosts'])}, "
                  f"kernel {'/'.join(shared['kernels'])}, link backend {'/'.join(shared['link_backends'])}",
                  flush=True)  # fmt: skip
            expected = None
            if not options.allow_mixed_hosts:
                expected = {"kernel": shared["kernels"][0], "link_backend": shared["link_backends"][0]}
            invocation["cluster"] = {"spec": options.cluster.describe(), "workers": facts, **shared}
            invocation["link_backend"] = {"backend": "/".join(shared["link_backends"]), "reason": "cluster workers"}
            start_metadata(metadata, invocation, {"backend": shared["link_backends"][0]})
            run.save()
            sweep: DaskSweep[Worker, RunSpec] = DaskSweep(
                client, kind=(profile.fingerprint(), options.timeout_s),
                build=functools.partial(_build_on_worker, profile, options.timeout_s, options.short_slots),
                run=Worker.run,
                error_row=lambda spec, err: build_row(spec, -1, "", failure("", repr(err)), None, 0),
                interrupt=Worker.interrupt, runs_csv=options.out / "runs.csv", schema=EXPERIMENT1,
                desc=f"experiment1/{profile.name}", item_id=lambda spec: spec.run_id, expected=expected,
                row_stamp={"invocation": invocation["id"]},
            )  # fmt: skip
            try:
                result = sweep.execute(pending)
            finally:
                with deferred_interrupts("tearing the workers' networks down", reraise=not result.interrupted):
                    try:
                        described = client.run(_describe_workers_networks)
                    except Exception:  # a record, never a reason to skip the teardown
                        described = {}
                    # One pre-flight report per network, named like the local pool's (the model's RTTs).
                    invocation["preflight"] = {
                        f"{address}/network{i}": n["preflight"]
                        for address, nets in described.items()
                        for i, n in enumerate(nets)
                    }
                    network = next((n["network"] for nets in described.values() for n in nets if "network" in n), None)
                    if network is not None:
                        invocation["network"] = network
                        metadata.setdefault("network", network)
                    invocation["retried"] = sweep.retried()
                    invocation["networks_closed"] = sweep.close_networks()
                    _record(options, run, result)
    except ClusterError as err:
        raise ExperimentError(str(err)) from None
    leftovers = clean()  # networks of workers that were killed (dead owners) on this machine
    if not leftovers.empty():
        print(leftovers.summary(), flush=True)
    return result


def _run_locked(options: Options) -> int:
    profile = options.profile
    if profile.timeline() is not None:
        from experiments.timevarying import run_timeline

        return run_timeline(options)
    settings = {"jobs": options.jobs, "timeout_s": options.timeout_s, "limit": options.limit, "out": str(options.out),
                "allow_mixed": options.allow_mixed, "schedule": options.schedule,
                "cluster": options.cluster.describe() if options.cluster else None,
                "allow_mixed_hosts": options.allow_mixed_hosts, "short_slots": options.short_slots}  # fmt: skip
    invocation = Invocation.begin(options.out, "experiment1", "runs", settings, profile.identity())
    pending = invocation.plan(lambda: _pending(options, invocation.runs_csv), len(expand_runs(profile)),
                              allow_mixed=options.allow_mixed, fields=ROW_FIELDS, jobs=options.jobs,
                              title=f"experiment 1, profile {profile.name}", unit="run")  # fmt: skip
    if not pending:
        return 0
    seeds = {"profile": profile.seed, "per_run": "sha256(profile seed : run_id), column 'seed'"}
    invocation.metadata.update(sweep_metadata(profile, seeds))
    run = _run_on_cluster if options.cluster is not None else _run_here
    return lifecycle.report_end(run(options, pending, invocation), "runs", options.out)


def parse_args(argv: list[str] | None = None) -> Options:
    """Command line -> validated Options (errors name the bad option and value)."""
    parser = command_parser("experiments.experiment1", __doc__)
    jobs_help = "parallel Figure 3 networks (attempts mostly wait: more than the cores)"
    lifecycle.add_sweep_options(parser, unit="attempt", results="results/experiment1", jobs_default=16,
                                jobs_help=jobs_help)  # fmt: skip
    parser.add_argument("--timeout", type=float, default=None,
                        help="mark attempts not connected after this many seconds as censored")  # fmt: skip
    parser.add_argument("--schedule", choices=("long-first", "profile"), default="long-first",
                        help="long-first (default): bands of expected attempt time, longest first, the "
                             "profile's random order inside a band (experiments.schedule); profile: the "
                             "profile's order")  # fmt: skip
    parser.add_argument(
        "--cluster",
        default=None,
        help="run the attempts on Dask: local:N (an embedded cluster of N worker processes, each "
        "with -j networks) or tcp://HOST:PORT (a running scheduler; see the README)",
    )
    parser.add_argument(
        "--allow-mixed-hosts",
        action="store_true",
        help="let cluster workers with different kernels or link backends share a sweep",
    )
    parser.add_argument("--short-slots", type=int, default=6,
                        help="attempts expected to be short (< 2 s: busy all along, unlike one waiting in a "
                             "back-off) that may run at once, per machine (make bench-sweep: beyond a few back "
                             "to back, the host's timing error grows)")  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.short_slots <= 64:
        parser.error(f"--short-slots={args.short_slots}: must be 1..64")
    cluster = None
    if args.cluster is not None:
        try:
            cluster = parse_cluster(args.cluster)
        except ValueError as err:
            parser.error(str(err))
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout={args.timeout}: must be a positive number of seconds")
    profile, out = lifecycle.sweep_arguments(parser, args, load_profile, RESULTS_BASE, max_jobs=64)
    return Options(profile, out, args.jobs, args.timeout, args.limit, args.allow_mixed, args.schedule, cluster,
                   args.allow_mixed_hosts, args.short_slots)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, check, run; clear one-line errors for every expected failure."""
    options = parse_args(argv)
    return run_guarded(lambda: run_sweep(options), failures=EXPECTED_FAILURES)


if __name__ == "__main__":
    sys.exit(main())
