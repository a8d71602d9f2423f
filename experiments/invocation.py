"""One invocation of a sweep in its results folder: what every runner does before and after its rows.

Before: read the folder's ``metadata.json``, refuse a folder of another profile, start this
invocation's record (code, machine, arguments, an id stamped on its rows); when something is
pending, refuse rows of other code (unless ``--allow-mixed``), set aside rows cut short (those run
again), print the plan and remove what dead runs left behind (``lifecycle.announce``). After: the
invocation's wall time, counts and whether it was interrupted, the folder's completeness, written
atomically. Experiment 1, experiment 2 and the time-varying runner share it (see
``experiments.runs_folder`` for the checks themselves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from experiments import lifecycle
from experiments.metadata import base_metadata, write_json
from experiments.runs_folder import (
    ProfileIdentity,
    check_code,
    check_profile,
    new_invocation_id,
    read_metadata,
    repair_runs_csv,
)
from experiments.sweep import finished_run_ids

T = TypeVar("T")


def print_notes(notes: Iterable[str]) -> None:
    """Notes about the folder (older fingerprints, repairs, mixed code), one a line."""
    for note in notes:
        print(note, flush=True)


@dataclass
class Invocation:
    """This invocation of ``kind`` writing into ``out``: the folder's metadata and this invocation's
    record (``record``; ``record["id"]`` goes into every row's ``invocation`` column).

    ``noun`` names the rows in messages (``runs``, ``loads``)."""

    out: Path
    kind: str
    noun: str
    metadata: dict[str, Any]
    record: dict[str, Any]
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def begin(cls, out: Path, kind: str, noun: str, settings: Mapping[str, Any],
              identity: ProfileIdentity) -> Invocation:  # fmt: skip
        """Read the folder's metadata, refuse another profile (``identity``: the profile, its fields'
        defaults and the fingerprint forms it may be stored under), start this invocation's record."""
        metadata = read_metadata(out / "metadata.json")
        print_notes(check_profile(out, metadata, identity, noun))
        record = base_metadata(kind, dict(settings))
        record["id"] = new_invocation_id()
        return cls(out, kind, noun, metadata, record)

    @property
    def runs_csv(self) -> Path:
        """The folder's rows."""
        return self.out / "runs.csv"

    def plan(
        self, pending: Callable[[], tuple[list[T], Collection[Any]]], total: int, *, allow_mixed: bool,
        fields: Sequence[str], title: str, unit: str, jobs: int, repairs: Callable[[], list[str]] = list,
    ) -> list[T]:  # fmt: skip
        """What to run: ``pending()`` (the items to run, the finished ones) once the folder is checked
        for resuming (other code, rows cut short with ``fields``, the runner's own ``repairs``), and
        announced; empty when nothing is pending."""
        todo, done = pending()
        if todo:
            notes = check_code(self.out, self.metadata, self.record["git"], allow_mixed, self.noun)
            notes += repair_runs_csv(self.runs_csv, fields)
            notes += repairs()
            print_notes(notes)
            if any("--allow-mixed" in note for note in notes):
                self.metadata["mixed_code"] = True
            todo, done = pending()  # the repair may have set cut rows aside: those are pending again
        if not lifecycle.announce(title, unit, (total, len(done), len(todo)), self.runs_csv, jobs):
            return []
        return todo

    def save(self) -> None:
        """Write the folder's metadata (atomically, fsynced)."""
        write_json(self.out / "metadata.json", self.metadata)

    def finish(self, *, interrupted: bool, counts: Mapping[str, int], run_ids: Iterable[str],
               unwritten: Sequence[tuple[str, str]] = ()) -> None:  # fmt: skip
        """The invocation's outcome (wall time, counts, interrupted, rows not written) and whether the
        folder now holds a final row for every one of ``run_ids``, saved."""
        self.record.update(wall_time_s=round(time.monotonic() - self.started, 1), interrupted=interrupted,
                           counts=dict(counts), unwritten=list(unwritten))  # fmt: skip
        finished = finished_run_ids(self.runs_csv)
        self.metadata["complete"] = not interrupted and all(run_id in finished for run_id in run_ids)
        self.save()
