"""Running a sweep's pending items on parallel workers, the part experiments 1 and 2 share.

One thread per worker takes the next item, runs it and appends its row to ``runs.csv`` (one line,
fsynced: a crash loses nothing already written); a progress bar shows the counts. A row that
cannot be written (disk full, I/O error) stops the sweep: ``SweepResult.unwritten`` names it and
the runner exits non-zero (``SweepResult.exit_status``). Ctrl-C (or SIGTERM raised as
KeyboardInterrupt) stops the workers, kills what they have in flight, waits for them (a second
Ctrl-C meanwhile is held, not obeyed), keeps every finished row and drops rows that ended because
of the interruption; rerunning resumes from ``finished_run_ids`` (see ``experiments.runs_folder``
for the folder's lock, its repair and what may resume it).
"""

from __future__ import annotations

import csv
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from tqdm import tqdm

from analysis.ownership import hand_to_invoking_user
from analysis.schema import FINAL_STATUSES, Schema, SchemaError
from topologies.interrupts import deferred_interrupts

W = TypeVar("W")
S = TypeVar("S")


def finished_run_ids(runs_csv: Path) -> set[str]:
    """Runs with a final status in an existing runs.csv (``error`` rows and malformed rows run again).

    Bookkeeping, not analysis: it reads only ``run_id`` and ``status`` and passes over rows with the
    wrong number of fields (``experiments.runs_folder.repair_runs_csv`` sets those aside before a
    resume); analysis reads the file strictly through ``analysis.schema``."""
    if not runs_csv.exists():
        return set()
    with runs_csv.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if "run_id" not in header or "status" not in header:
            return set()
        run_id, status = header.index("run_id"), header.index("status")
        return {row[run_id] for row in reader if len(row) == len(header) and row[status] in FINAL_STATUSES}


class HasRunId(Protocol):
    """A run's specification: anything with a ``run_id``."""

    @property
    def run_id(self) -> str: ...


R = TypeVar("R", bound=HasRunId)


def pending_runs(specs: Iterable[R], runs_csv: Path, limit: int | None) -> tuple[list[R], set[str]]:
    """The runs of ``specs`` without a final row in ``runs_csv`` (at most ``limit``), and the finished ids."""
    done = finished_run_ids(runs_csv)
    pending = [spec for spec in specs if spec.run_id not in done]
    return (pending[:limit] if limit is not None else pending), done


def _one_line(value: Any) -> Any:
    """Row values never span lines, so that one row is one line (a cut row is then easy to see)."""
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        return value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return value


def append_row(runs_csv: Path, row: dict[str, Any], lock: threading.Lock, schema: Schema) -> None:
    """Append one row, validated by its schema (SchemaError naming the column otherwise), and flush it
    to disk (a crash loses nothing already written); OSError if not written. A new file starts with
    the schema's header and belongs to the invoking user."""
    fields = schema.format_row({key: _one_line(value) for key, value in row.items()})
    with lock:
        new = not runs_csv.exists() or runs_csv.stat().st_size == 0
        with runs_csv.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(schema.names)
            writer.writerow(fields)
            handle.flush()
            os.fsync(handle.fileno())
        if new:
            hand_to_invoking_user(runs_csv)


@dataclass
class SweepResult:
    """What a sweep did: status counts, whether Ctrl-C stopped it, rows it could not write (run id,
    error), and workers still busy when it returned (they did not stop in time)."""

    counts: dict[str, int]
    interrupted: bool
    unwritten: list[tuple[str, str]] = field(default_factory=list)
    busy_workers: list[str] = field(default_factory=list)

    def exit_status(self) -> int:
        """The runner's exit status: 1 if rows are lost or broken, 130 if interrupted, else 0."""
        if self.unwritten:
            return 1
        if self.interrupted:
            return 130
        return 0 if self.counts.get("error", 0) == 0 else 1

    def report(self) -> list[str]:
        """Lines for the user about what went wrong (empty when nothing did)."""
        lines = []
        if self.unwritten:
            listed = "; ".join(f"{run_id} ({error})" for run_id, error in self.unwritten[:20])
            more = f" and {len(self.unwritten) - 20} more" if len(self.unwritten) > 20 else ""
            lines.append(f"error: {len(self.unwritten)} row(s) could not be written to runs.csv, so the sweep "
                         f"stopped: {listed}{more}; a rerun runs them again once the cause is fixed")  # fmt: skip
        if self.busy_workers:
            lines.append(f"warning: {', '.join(self.busy_workers)} did not stop in time")
        return lines


@dataclass
class Sweep(Generic[W, S]):
    """Pending items run by workers; ``run(worker, item)`` returns the row, ``error_row`` the row of
    an item whose run raised; ``interrupt(worker)`` kills what a worker has in flight;
    ``row_stamp`` is set in every row (e.g. the invocation id); ``item_id`` names an item."""

    workers: Sequence[W]
    run: Callable[[W, S], dict[str, Any]]
    error_row: Callable[[W, S, Exception], dict[str, Any]]
    runs_csv: Path
    schema: Schema
    desc: str
    unit: str = "run"
    interrupt: Callable[[W], None] | None = None
    join_timeout_s: float = 60.0
    row_stamp: Mapping[str, Any] = field(default_factory=dict)
    item_id: Callable[[S], str] = lambda item: str(getattr(item, "run_id", item))
    #: Workers still to be built (in the calling thread), each starting as soon as it exists: the
    #: first attempts run while later networks are being built.
    more_workers: Iterable[W] = ()

    def execute(self, pending: Sequence[S]) -> SweepResult:
        """Run every pending item (see the module docstring for errors and Ctrl-C)."""
        if self.runs_csv.exists() and self.runs_csv.stat().st_size > 0:
            self.schema.check_header(self.runs_csv)  # appended rows must line up with its columns
        todo: queue.Queue[S] = queue.Queue()
        for item in pending:
            todo.put(item)
        result = SweepResult(counts={"ok": 0, "failed": 0, "censored": 0, "error": 0}, interrupted=False)
        lock = threading.Lock()
        stop = threading.Event()
        bar = tqdm(total=len(pending), unit=self.unit, dynamic_ncols=True, desc=self.desc)

        def work(worker: W) -> None:
            while not stop.is_set():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    row = self.run(worker, item)
                except Exception as err:  # a broken worker must not lose the others' rows
                    if stop.is_set():
                        return
                    row = self.error_row(worker, item, err)
                if stop.is_set() and row["status"] != "ok":
                    return  # ended by Ctrl-C (or a failed write): not a result; a resume runs it again
                row = {**row, **self.row_stamp}
                try:
                    append_row(self.runs_csv, row, lock, self.schema)
                except (OSError, SchemaError) as err:
                    # The disk is full or failing (or the runner made a row its schema refuses): every later
                    # row would be lost too. Stop, say which.
                    with lock:
                        result.unwritten.append((str(row.get("run_id", self.item_id(item))), f"{err}"))
                    stop.set()
                    tqdm.write(f"error: cannot write {self.runs_csv}: {err}; stopping the sweep", file=sys.stderr)
                    return
                with lock:
                    result.counts[row["status"]] = result.counts.get(row["status"], 0) + 1
                    bar.set_postfix(result.counts, refresh=False)
                    bar.update(1)

        workers = list(self.workers)
        threads = [threading.Thread(target=work, args=(w,), name=f"worker{i}") for i, w in enumerate(workers)]
        try:
            for thread in threads:  # inside the try: a Ctrl-C may come while the last ones start
                thread.start()
            for worker in self.more_workers:
                workers.append(worker)
                threads.append(threading.Thread(target=work, args=(worker,), name=f"worker{len(threads)}"))
                threads[-1].start()
                if todo.empty() or stop.is_set():
                    break  # nothing left to hand out: build no more networks
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.5)
        except BaseException as err:
            # Ctrl-C, or a network that could not be built while the first ones already run.
            interrupted = isinstance(err, KeyboardInterrupt)
            result.interrupted = True
            stop.set()
            if interrupted:
                print("\ninterrupted: stopping what is in flight, keeping every finished row ...", flush=True)
            # Until every worker has stopped, a second Ctrl-C is held: the networks must not be torn
            # down under a running attempt, nor its processes left behind.
            with deferred_interrupts("stopping the workers", reraise=False):
                for worker in workers:
                    if self.interrupt is not None:
                        self.interrupt(worker)
                deadline = time.monotonic() + self.join_timeout_s
                for thread in threads:
                    if thread.ident is not None:  # started
                        thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if not interrupted:
                raise
        finally:
            bar.close()
        result.busy_workers = [t.name for t in threads if t.is_alive()]
        return result


def run_then_tear_down(
    start: Callable[[ExitStack], Callable[[], SweepResult]], record: Callable[[SweepResult], None],
    what: str = "the networks",
) -> SweepResult:  # fmt: skip
    """A sweep with its networks: ``start(stack)`` builds them (torn down by ``stack``) and returns
    the sweep to run; ``record(result)`` runs whatever happened (a result counts as interrupted
    until the sweep returns). A Ctrl-C during the teardown is held until it is done; it stops the
    run only if the sweep was not stopped already (then the teardown is what it asked for)."""
    stack = ExitStack()
    result = SweepResult(counts={}, interrupted=True)
    try:
        execute = start(stack)
        try:
            result = execute()
        finally:
            record(result)
    finally:
        with deferred_interrupts(f"tearing {what} down", reraise=not result.interrupted):
            stack.close()
    return result
