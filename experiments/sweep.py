"""Running a sweep's pending items on parallel workers, the part experiments 1 and 2 share.

One thread per worker takes the next item, runs it and appends its row to ``runs.csv`` (fsynced:
a crash loses nothing already written); a progress bar shows the counts. Ctrl-C (or SIGTERM
raised as KeyboardInterrupt) stops the workers, keeps every finished row and drops rows that
ended because of the interruption; rerunning resumes from ``finished_run_ids``.
"""

from __future__ import annotations

import csv
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from analysis.ownership import hand_to_invoking_user
from analysis.schema import FINAL_STATUSES, Schema

W = TypeVar("W")
S = TypeVar("S")


def finished_run_ids(runs_csv: Path, schema: Schema) -> set[str]:
    """Runs with a final status in an existing runs.csv (``error`` rows are run again), read through
    its schema: a damaged file stops the resume with a SchemaError naming its file, line and column."""
    if not runs_csv.exists() or runs_csv.stat().st_size == 0:
        return set()
    runs = schema.read(runs_csv)
    return set(runs.loc[runs["status"].isin(FINAL_STATUSES), "run_id"].astype(str))


def check_resumable(files: Sequence[tuple[Path, Schema]]) -> None:
    """SchemaError unless every existing (non-empty) file has exactly its schema's header, so that the
    rows a resumed sweep appends line up with the stored ones."""
    for path, schema in files:
        if path.exists() and path.stat().st_size > 0:
            schema.check_header(path)


def append_row(runs_csv: Path, row: dict[str, Any], lock: threading.Lock, schema: Schema) -> None:
    """Append one row, validated by its schema, and flush it to disk (a crash loses nothing already
    written); a new file starts with the schema's header and belongs to the invoking user."""
    fields = schema.format_row(row)
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
class Sweep(Generic[W, S]):
    """Pending items run by workers; ``run(worker, item)`` returns the row, ``error_row`` the row of
    an item whose run raised; ``interrupt(worker)`` kills what a worker has in flight."""

    workers: Sequence[W]
    run: Callable[[W, S], dict[str, Any]]
    error_row: Callable[[W, S, Exception], dict[str, Any]]
    runs_csv: Path
    schema: Schema
    desc: str
    unit: str = "run"
    interrupt: Callable[[W], None] | None = None
    join_timeout_s: float = 10.0

    def execute(self, pending: Sequence[S]) -> tuple[dict[str, int], bool]:
        """Run every pending item; the status counts, and whether Ctrl-C stopped the sweep."""
        if self.runs_csv.exists() and self.runs_csv.stat().st_size > 0:
            self.schema.check_header(self.runs_csv)  # appended rows must line up with its columns
        todo: queue.Queue[S] = queue.Queue()
        for item in pending:
            todo.put(item)
        counts = {"ok": 0, "failed": 0, "censored": 0, "error": 0}
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
                    return  # ended by Ctrl-C: not a result (a resume runs it again)
                append_row(self.runs_csv, row, lock, self.schema)
                with lock:
                    counts[row["status"]] = counts.get(row["status"], 0) + 1
                    bar.set_postfix(counts, refresh=False)
                    bar.update(1)

        threads = [threading.Thread(target=work, args=(w,), name=f"worker{i}") for i, w in enumerate(self.workers)]
        for thread in threads:
            thread.start()
        interrupted = False
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.5)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            print("\ninterrupted: stopping what is in flight, keeping every finished row ...", flush=True)
            for worker in self.workers:
                if self.interrupt is not None:
                    self.interrupt(worker)
            for thread in threads:
                thread.join(timeout=self.join_timeout_s)
        finally:
            bar.close()
        return counts, interrupted
