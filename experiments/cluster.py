"""Running a sweep's attempts on a Dask distributed cluster (``--cluster local:N`` or ``tcp://HOST:PORT``).

The driver (the experiment's runner) keeps everything that makes a sweep trustworthy: the results
folder's lock, the repair before a resume, the one runs.csv written row by row and fsynced, the
metadata. Dask only carries the attempts:

- **Workers own their networks.** A Dask worker process (root, on a machine set up by the README)
  keeps a ``NetworkPool``: the first attempt a worker thread runs builds a network (for experiment
  1: Figure 3 with its servers, agent and timing canary); later attempts reuse a free one, so a
  process with T threads owns at most T networks. ``NetworkTeardown`` (a worker plugin) tears them
  down when the worker leaves; the driver also tears them down at the end of the sweep (workers of
  a long-running cluster then hold nothing between sweeps). A worker killed outright leaves its
  namespaces behind with a dead owner: the next network built on that machine, and the driver at
  the end, remove them (``topologies.cleanup.clean`` never touches a live run's).
- **Attempts are tasks.** Each pending run is one task, submitted in the sweep's order (priority),
  so the long attempts still start first. A worker that dies loses only its in-flight tasks: the
  scheduler runs them again on another worker (Dask counts them as *suspicious*; past three deaths
  a task fails with KilledWorker, which becomes an ``error`` row, rerun on resume). The row then
  records ``retries`` (the scheduler's count) and the metadata names the workers each retried run
  started on, where their events reached the driver (``retried``).
- **Every row says where it was measured**: ``host``, ``kernel``, ``engine_worker``. Before the
  sweep the driver asks every worker for its kernel and link backend and refuses a cluster that
  mixes them unless ``--allow-mixed-hosts``; a worker joining later with another kernel or backend
  refuses its attempts (error rows).
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from analysis.schema import Schema, SchemaError
from experiments.sweep import SweepResult, append_row
from topologies.interrupts import deferred_interrupts

S = TypeVar("S")
N = TypeVar("N")
#: Topic of the "attempt started" events the workers log (the driver learns about retries from them).
STARTED_TOPIC = "robe-lab-attempt-started"


class ClusterError(RuntimeError):
    """The cluster cannot run this sweep; the message says why."""


@dataclass(frozen=True)
class ClusterSpec:
    """``local:N`` (an embedded cluster of N worker processes) or a scheduler address."""

    local_workers: int | None = None
    address: str | None = None

    def describe(self) -> str:
        """As the user wrote it."""
        return f"local:{self.local_workers}" if self.local_workers is not None else str(self.address)


def parse_cluster(value: str) -> ClusterSpec:
    """``local:N`` (1..64) or ``tcp://HOST:PORT``; ValueError naming the value otherwise."""
    if value.startswith("local:"):
        count = value.removeprefix("local:")
        if not count.isdigit() or not 1 <= int(count) <= 64:
            raise ValueError(f"--cluster={value!r}: local:N needs N within 1..64")
        return ClusterSpec(local_workers=int(count))
    if value.startswith(("tcp://", "tls://")):
        host, _, port = value.split("://", 1)[1].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--cluster={value!r}: expected tcp://HOST:PORT")
        return ClusterSpec(address=value)
    raise ValueError(f"--cluster={value!r}: expected local:N or tcp://HOST:PORT (a running dask scheduler)")


def host_facts() -> dict[str, Any]:
    """What must agree across the machines of one sweep (run on each worker)."""
    from experiments.metadata import git_summary
    from topologies.links import choose_backend

    mptcp = Path("/proc/sys/net/mptcp/enabled")
    return {
        "git": git_summary(),
        "host": socket.gethostname(),
        "kernel": platform.release(),
        "root": os.geteuid() == 0,
        "mptcp": mptcp.read_text().strip() == "1" if mptcp.exists() else False,
        "link_backend": _pool().backend_name(choose_backend),
        "python": sys.version.split()[0],
        "pid": os.getpid(),
    }


def check_hosts(
    facts: Mapping[str, Mapping[str, Any]], allow_mixed: bool, code: Mapping[str, Any] | None = None,
    allow_mixed_code: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The kernel and link backend every worker shares; ClusterError for a worker that cannot run
    the sweep, for a mix (unless ``allow_mixed``), or for a worker whose checkout is not the
    driver's code ``code`` (commit, dirty flag and modifications; unless ``allow_mixed_code``)."""
    if not facts:
        raise ClusterError("the cluster has no workers")
    for address, fact in facts.items():
        theirs = fact.get("git", {})
        if code is not None and not allow_mixed_code and _code_id(theirs) != _code_id(code):
            raise ClusterError(f"worker {address} ({fact['host']}) runs code {_code_id(theirs)}, the driver "
                               f"{_code_id(code)}: check out the same commit on every machine, or pass "
                               "--allow-mixed")  # fmt: skip
        if not fact["root"]:
            raise ClusterError(f"worker {address} ({fact['host']}) does not run as root: start 'dask worker' as root")
        if not fact["mptcp"]:
            raise ClusterError(f"worker {address} ({fact['host']}): kernel {fact['kernel']} has MPTCP disabled")
    kernels = sorted({str(f["kernel"]) for f in facts.values()})
    backends = sorted({str(f["link_backend"]) for f in facts.values()})
    if (len(kernels) > 1 or len(backends) > 1) and not allow_mixed:
        raise ClusterError(f"workers differ: kernels {kernels}, link backends {backends}; rows from different "
                           "kernels or emulators are not comparable: use one kind of machine, or pass "
                           "--allow-mixed-hosts (every row records its host and kernel)")  # fmt: skip
    return {"kernels": kernels, "link_backends": backends, "hosts": sorted({str(f["host"]) for f in facts.values()})}


def _code_id(git: Mapping[str, Any]) -> str:
    commit = str(git.get("commit"))[:12]
    return f"{commit}+{git.get('diff_sha256', 'dirty')}" if git.get("dirty") else commit


# ---------------------------------------------------------------------------------------------
# Worker side: the networks a worker process owns.


class NetworkPool:
    """The networks (any objects with resources) of one worker process, by kind.

    ``acquire(kind, build)`` hands a free one of that kind to the calling thread, building one with
    ``build(index, stack)`` when none is free; ``release`` gives it back; ``close`` tears everything
    down (the ExitStack each was built into).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[Hashable, list[Any]] = defaultdict(list)
        self._busy: dict[Hashable, list[Any]] = defaultdict(list)
        self._stacks: list[contextlib.ExitStack] = []
        self._cleaned = False
        self._backend: str | None = None
        self.built = 0

    def backend_name(self, choose: Callable[[], Any]) -> str:
        """This machine's link backend (probed once per process)."""
        with self._lock:
            if self._backend is None:
                self._backend = str(choose().backend.value)
            return self._backend

    def acquire(self, kind: Hashable, build: Callable[[int, contextlib.ExitStack], Any]) -> Any:
        """A free network of ``kind`` (built now if none is free)."""
        with self._lock:
            if self._free[kind]:
                item = self._free[kind].pop()
                self._busy[kind].append(item)
                return item
            index = self.built
            self.built += 1
            first = not self._cleaned
            self._cleaned = True
        if first:
            from topologies.cleanup import clean

            clean()  # what killed workers left on this machine (dead owners only)
        stack = contextlib.ExitStack()
        try:
            item = build(index, stack)
        except BaseException:
            stack.close()
            raise
        with self._lock:
            self._stacks.append(stack)
            self._busy[kind].append(item)
        return item

    def release(self, kind: Hashable, item: Any) -> None:
        """Give a network back after an attempt."""
        with self._lock:
            self._busy[kind].remove(item)
            self._free[kind].append(item)

    def all_items(self) -> list[Any]:
        """Every network of this process, free or busy."""
        with self._lock:
            return [item for group in (self._free, self._busy) for items in group.values() for item in items]

    def busy(self) -> list[Any]:
        """Networks running an attempt now."""
        with self._lock:
            return [item for items in self._busy.values() for item in items]

    def close(self) -> int:
        """Tear every network down; how many there were."""
        with self._lock:
            stacks, self._stacks = self._stacks, []
            self._free.clear()
            self._busy.clear()
        for stack in stacks:
            with contextlib.suppress(Exception):
                stack.close()
        return len(stacks)


_POOL: NetworkPool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> NetworkPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = NetworkPool()
        return _POOL


def interrupt_busy(interrupt: Callable[[Any], None]) -> int:
    """Kill what every busy network of this worker runs (driver's Ctrl-C); how many."""
    busy = _pool().busy()
    for item in busy:
        with contextlib.suppress(Exception):
            interrupt(item)
    return len(busy)


def close_networks() -> int:
    """Tear this worker's networks down (end of a sweep, or the worker leaving)."""
    return _pool().close()


def _teardown_plugin() -> Any:
    from distributed import WorkerPlugin

    class NetworkTeardown(WorkerPlugin):
        """Tears the worker's networks down when the worker closes."""

        name = "robe-lab-networks"

        def teardown(self, worker: Any) -> None:
            close_networks()

    return NetworkTeardown()


def run_on_pool(
    kind: Hashable,
    build: Callable[[int, contextlib.ExitStack], N],
    run: Callable[[N, S], dict[str, Any]],
    item: S,
    run_id: str,
    expected: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The task: run ``item`` on a network of this worker; the row names the engine worker."""
    from distributed import get_worker

    worker = get_worker()
    if expected is not None:
        mine = {"kernel": platform.release(), "link_backend": _pool().backend_name(_choose_backend)}
        if any(mine[key] != value for key, value in expected.items()):
            raise ClusterError(f"worker {worker.address} has {mine}, the sweep runs on {dict(expected)} "
                               "(--allow-mixed-hosts to mix)")  # fmt: skip
    worker.log_event(STARTED_TOPIC, {"run_id": run_id, "worker": worker.address, "host": socket.gethostname()})
    network = _pool().acquire(kind, build)
    try:
        row = run(network, item)
    finally:
        _pool().release(kind, network)
    return {**row, "engine_worker": worker.address}


def _choose_backend() -> Any:
    from topologies.links import choose_backend

    return choose_backend()


# ---------------------------------------------------------------------------------------------
# Driver side.


@contextlib.contextmanager
def connect(spec: ClusterSpec, threads_per_worker: int) -> Iterator[Any]:
    """A dask Client for ``spec``: an embedded local cluster (closed afterwards) or a running scheduler."""
    from distributed import Client, LocalCluster

    # Worker processes import the project; spawned children get it through PYTHONPATH.
    root = str(Path(__file__).resolve().parent.parent)
    if root not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    if spec.local_workers is not None:
        # No memory limit: the networks' processes are not the worker's, and a paused worker
        # would stall its attempts. No dashboard: nothing listens beyond loopback.
        cluster = LocalCluster(n_workers=spec.local_workers, threads_per_worker=threads_per_worker,  # type: ignore[no-untyped-call]
                               processes=True, memory_limit=0, dashboard_address=None, host="127.0.0.1")  # fmt: skip
        with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            client.register_plugin(_teardown_plugin())
            yield client
        return
    try:
        client = Client(spec.address, timeout=30)  # type: ignore[no-untyped-call]
    except OSError as err:
        raise ClusterError(f"cannot reach the dask scheduler at {spec.address}: {err}") from None
    with client:
        client.register_plugin(_teardown_plugin())
        client.wait_for_workers(1, timeout=120)
        yield client


@dataclass
class DaskSweep(Generic[N, S]):
    """Pending items run as tasks on a cluster; rows written by the driver (see the module docstring).

    ``kind`` names the networks a task needs (e.g. the profile fingerprint); ``build(index, stack)``
    builds one on a worker; ``run(network, item)`` returns the row; ``error_row(item, error)`` the row
    of a task that raised; ``interrupt(network)`` kills what a network runs (Ctrl-C).
    """

    client: Any
    kind: Hashable
    build: Callable[[int, contextlib.ExitStack], N]
    run: Callable[[N, S], dict[str, Any]]
    error_row: Callable[[S, BaseException], dict[str, Any]]
    interrupt: Callable[[N], None]
    runs_csv: Path
    schema: Schema
    desc: str
    item_id: Callable[[S], str]
    expected: Mapping[str, str] | None = None
    row_stamp: Mapping[str, Any] = field(default_factory=dict)
    unit: str = "run"
    started_on: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    retry_counts: dict[str, int] = field(default_factory=dict)

    def _on_started(self, event: Any) -> None:
        _timestamp, message = event
        self.started_on[str(message["run_id"])].append(str(message["worker"]))

    def _retries(self, keys: list[str]) -> dict[str, int]:
        def suspicious(dask_scheduler: Any, keys: list[str]) -> dict[str, int]:
            return {k: dask_scheduler.tasks[k].suspicious for k in keys if k in dask_scheduler.tasks}

        try:
            result: dict[str, int] = self.client.run_on_scheduler(suspicious, keys=keys)
            return result
        except Exception:  # the count is a record, never a reason to lose a row
            return {}

    def execute(self, pending: Sequence[S]) -> SweepResult:
        """Run every pending item on the cluster; Ctrl-C cancels and kills what is in flight."""
        from distributed import as_completed

        if self.runs_csv.exists() and self.runs_csv.stat().st_size > 0:
            self.schema.check_header(self.runs_csv)  # appended rows must line up with its columns
        result = SweepResult(counts={"ok": 0, "failed": 0, "censored": 0, "error": 0}, interrupted=False)
        lock = threading.Lock()
        bar = tqdm(total=len(pending), unit=self.unit, dynamic_ncols=True, desc=self.desc)
        self.client.subscribe_topic(STARTED_TOPIC, self._on_started)
        by_key: dict[str, S] = {}
        futures = []
        for order, item in enumerate(pending):
            key = f"{self.desc}-{self.item_id(item)}-{time.monotonic_ns()}"
            by_key[key] = item
            futures.append(self.client.submit(run_on_pool, self.kind, self.build, self.run, item, self.item_id(item),
                                              self.expected, key=key, pure=False,
                                              priority=len(pending) - order))  # fmt: skip
        try:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                item = by_key[future.key]
                try:
                    row = future.result()
                except Exception as err:  # KilledWorker, a worker refusing, a broken build
                    row = self.error_row(item, err)
                    tqdm.write(f"error: {self.item_id(item)}: {err!r}", file=sys.stderr)
                retries = self._retries([future.key]).get(future.key, 0)
                self.retry_counts[self.item_id(item)] = retries
                row = {**row, **self.row_stamp, "retries": retries}
                future.release()
                try:
                    append_row(self.runs_csv, row, lock, self.schema)
                except (OSError, SchemaError) as err:
                    # The disk is full or failing (or a row its schema refuses): later rows would be lost too.
                    result.unwritten.append((self.item_id(item), str(err)))
                    tqdm.write(f"error: cannot write {self.runs_csv}: {err}; stopping the sweep", file=sys.stderr)
                    self._stop(futures)
                    break
                result.counts[row["status"]] = result.counts.get(row["status"], 0) + 1
                bar.set_postfix(result.counts, refresh=False)
                bar.update(1)
        except KeyboardInterrupt:
            result.interrupted = True
            print("\ninterrupted: stopping the tasks in flight, keeping every finished row ...", flush=True)
            with deferred_interrupts("stopping the cluster's attempts", reraise=False):
                self._stop(futures)
        finally:
            bar.close()
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(STARTED_TOPIC)
        return result

    def _stop(self, futures: list[Any]) -> None:
        self.client.cancel(futures)
        with contextlib.suppress(Exception):
            self.client.run(interrupt_busy, self.interrupt)

    def retried(self) -> dict[str, dict[str, Any]]:
        """Runs whose worker died under them: how often (the scheduler's count) and the workers they
        started on (from the workers' events; a worker killed at once may not have sent its own)."""
        return {run_id: {"retries": count, "started_on": list(self.started_on.get(run_id, []))}
                for run_id, count in self.retry_counts.items() if count > 0}  # fmt: skip

    def close_networks(self) -> dict[str, int]:
        """Tear down every worker's networks (end of the sweep)."""
        try:
            closed: dict[str, int] = self.client.run(close_networks)
            return closed
        except Exception as err:
            print(f"warning: could not tear down the workers' networks: {err}", file=sys.stderr)
            return {}
