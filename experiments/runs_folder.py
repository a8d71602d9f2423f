"""The results folder of a resumable sweep: one runner at a time, a well-formed runs.csv, and a
resume only by the same profile, corpus and code.

- ``lock_folder``: an exclusive ``flock`` on ``<folder>/.lock`` for the whole run (the kernel drops
  it when the runner dies, even by kill -9); a second runner stops with a message naming the first.
- ``repair_runs_csv``: before a resume, a last row cut short (the runner was killed while writing,
  or the disk filled up) is moved to ``runs.csv.partial-<time>`` and the file cut back to its last
  complete row, so that run is done again and the next row starts on a fresh line; rows with the
  wrong number of fields are moved to ``runs.csv.rejected-<time>``; a header missing columns this
  code writes (a folder from an older version) gets them, empty.
- ``check_resume``: the profile fingerprint (for experiment 2 it includes the corpus's content
  hash) must match, and the rows already there must come from the same code (git commit and, for
  a modified tree, the hash of the modifications) unless ``allow_mixed``; every row names the
  invocation that wrote it (column ``invocation``), every invocation its code in the metadata.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from analysis.ownership import hand_to_invoking_user

LOCK_NAME = ".lock"
INVOCATION_FIELD = "invocation"


class ResultsFolderError(RuntimeError):
    """The results folder cannot be used as asked; the message says why and what to do."""


def new_invocation_id() -> str:
    """An id for this run of a runner: its start time (UTC) and process id."""
    return f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"


@contextlib.contextmanager
def lock_folder(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while the block runs (``what``: who holds it, for others)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            raise ResultsFolderError(
                f"results folder {folder} is in use by another runner ({holder}); wait for it to finish, "
                "or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what}, pid {os.getpid()}, since {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    hand_to_invoking_user(path)


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _records(text: str) -> tuple[list[tuple[list[str], str]], str]:
    """The complete CSV records of ``text`` with their raw text, and an incomplete tail (or "")."""
    lines = re.split(r"(?<=\n)", text)
    if lines and lines[-1] == "":
        lines.pop()
    records: list[tuple[list[str], str]] = []
    reader = csv.reader(iter(lines), strict=True)
    consumed = 0
    try:
        for row in reader:
            raw = "".join(lines[consumed : reader.line_num])
            consumed = reader.line_num
            records.append((row, raw))
    except csv.Error as err:
        if reader.line_num < len(lines):
            raise ResultsFolderError(f"runs.csv line {reader.line_num}: not CSV ({err}); move it away") from None
        return records, "".join(lines[consumed:])  # an open quote at the end: the row was cut short
    if records and not records[-1][1].endswith("\n"):
        return records[:-1], records[-1][1]
    return records, ""


def repair_runs_csv(path: Path, fields: Sequence[str]) -> list[str]:
    """Make ``path`` well-formed before rows are appended; what was done, one line each.

    Raises ResultsFolderError when its columns are not the ones this code writes.
    """
    if not path.exists() or path.stat().st_size == 0:
        return []
    notes: list[str] = []
    data = path.read_bytes()
    records, tail = _records(data.decode("utf-8", errors="surrogateescape"))
    if tail:
        kept = path.with_name(f"{path.name}.partial-{_stamp()}")
        kept.write_bytes(tail.encode("utf-8", errors="surrogateescape"))
        fsync_dir(path.parent)
        notes.append(f"{path.name}: its last row was cut short ({len(tail)} bytes, kept in {kept.name}); "
                     "that run is done again")  # fmt: skip
    if not records:
        path.unlink()
        fsync_dir(path.parent)
        return [*notes, f"{path.name}: no complete header: started afresh"]
    header = records[0][0]
    unknown = [c for c in header if c not in fields]
    if unknown or len(set(header)) != len(header):
        raise ResultsFolderError(
            f"{path}: columns {header} are not the ones this code writes ({list(fields)}); "
            "choose another --out or move that folder away"
        )
    good = [row for row, _ in records[1:] if len(row) == len(header)]
    bad = [raw for row, raw in records[1:] if len(row) != len(header)]
    if bad:
        kept = path.with_name(f"{path.name}.rejected-{_stamp()}")
        kept.write_bytes("".join(bad).encode("utf-8", errors="surrogateescape"))
        notes.append(f"{path.name}: {len(bad)} malformed row(s) (wrong number of fields) moved to {kept.name}; "
                     "their runs are done again")  # fmt: skip
    missing = [c for c in fields if c not in header]
    if missing:
        notes.append(f"{path.name}: added the column(s) {missing} (empty for its older rows)")
    if bad or missing:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(fields))
        writer.writeheader()
        for row in good:
            writer.writerow(dict(zip(header, row, strict=True)))
        _write_atomically(path, out.getvalue())
    elif tail:
        with path.open("r+b") as handle:
            handle.truncate(len(data) - len(tail.encode("utf-8", errors="surrogateescape")))
            os.fsync(handle.fileno())
    return notes


def set_aside_rows_of_unfinished_runs(path: Path, fields: Sequence[str], finished: set[str]) -> list[str]:
    """Move the rows of ``path`` (a per-run side file such as connections.csv, repaired first) whose
    ``run_id`` has no final row in runs.csv to ``<name>.unfinished-<time>``: those runs are done
    again, and their rows must not be there twice."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    stale = [row for row in rows if row.get("run_id") not in finished]
    if not stale:
        return []
    _write_rows(path.with_name(f"{path.name}.unfinished-{_stamp()}"), fields, stale)
    _write_rows(path, fields, [row for row in rows if row.get("run_id") in finished])
    runs = sorted({str(row.get("run_id")) for row in stale})
    return [f"{path.name}: {len(stale)} row(s) of {len(runs)} run(s) without a final row in runs.csv set aside "
            f"(those runs are done again): {', '.join(runs[:5])}{' ...' if len(runs) > 5 else ''}"]  # fmt: skip


def _write_rows(path: Path, fields: Sequence[str], rows: list[dict[str, Any]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomically(path, out.getvalue())


def code_id(git: dict[str, Any] | None) -> str:
    """One string naming the code of an invocation: the commit, and its modifications if any."""
    if not git or not git.get("commit"):
        return "unknown"
    if not git.get("dirty"):
        return str(git["commit"])
    return f"{git['commit']}+modified:{git.get('diff_sha256') or 'unknown'}"


def invocations_with_rows(runs_csv: Path) -> tuple[set[str], bool]:
    """Invocation ids of the rows in ``runs_csv``, and whether some rows name none (older rows)."""
    ids: set[str] = set()
    unnamed = False
    if not runs_csv.exists():
        return ids, unnamed
    with runs_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            value = row.get(INVOCATION_FIELD) or ""
            if value:
                ids.add(value)
            else:
                unnamed = True
    return ids, unnamed


@dataclass(frozen=True)
class ProfileIdentity:
    """What a results folder's stored profile is checked against.

    ``values``: the profile as the metadata stores it (``to_dict``); ``defaults``: each field's default;
    ``forms``: functions giving the fingerprint of a profile's values, the current form first, then older
    forms a folder may be stored under (e.g. before the corpus was hashed).
    """

    values: Mapping[str, Any]
    defaults: Mapping[str, Any]
    forms: Sequence[Callable[[Mapping[str, Any]], str]]

    def fingerprint(self) -> str:
        """The profile's current fingerprint."""
        return self.forms[0](self.values)


def field_defaults(cls: type) -> dict[str, Any]:
    """Each field of the dataclass ``cls`` that has a default, with it as the metadata would store it."""
    defaults: dict[str, Any] = {}
    for spec in fields(cls):
        if spec.default is not MISSING:
            defaults[spec.name] = spec.default
        elif spec.default_factory is not MISSING:
            defaults[spec.name] = spec.default_factory()
    return json.loads(json.dumps(defaults, default=_plain))  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"not JSON-serialisable: {value!r}")


def profile_differences(stored: Mapping[str, Any], current: Mapping[str, Any],
                        defaults: Mapping[str, Any]) -> tuple[list[str], list[str]]:  # fmt: skip
    """(differences, fields added since) between a stored profile and the current one.

    A field the stored profile lacks is one added to the code later; at its default it is what the code
    did before it existed (the convention for every new field), so it is no difference.
    """
    now = json.loads(json.dumps(current, default=_plain))
    differences: list[str] = []
    added: list[str] = []
    for key in sorted(set(stored) | set(now)):
        if key not in stored:
            if key in defaults and now[key] == defaults[key]:
                added.append(key)
            else:
                differences.append(f"{key} = {now[key]!r} (a field added since, not at its default)")
        elif key not in now:
            differences.append(f"{key} (stored {stored[key]!r}) is no field of this code's profile")
        elif stored[key] != now[key]:
            differences.append(f"{key}: stored {stored[key]!r}, profile {now[key]!r}")
    return differences, added


def check_profile(folder: Path, metadata: dict[str, Any], identity: ProfileIdentity, kind: str) -> list[str]:
    """Refuse (ResultsFolderError) a folder of another profile or corpus; notes otherwise.

    A folder stored before a profile field existed is accepted when its stored profile is really what
    its fingerprint was computed from (one of ``identity.forms`` reproduces it, so for experiment 2 the
    corpus is unchanged too) and it differs from the profile only by fields added since, at their
    defaults. Otherwise the error names the fields that differ.
    """
    stored = metadata.get("profile_fingerprint")
    if stored is None or stored == identity.fingerprint():
        return []
    if any(form(identity.values) == stored for form in identity.forms[1:]):
        return [f"{folder}: stored under the older fingerprint {stored} (without the corpus hash)"]
    refusal = f"results folder {folder} holds {kind} of a different profile or corpus (fingerprint {stored} != " \
              f"{identity.fingerprint()})"  # fmt: skip
    advice = "choose another --out or move that folder away"
    stored_values = metadata.get("profile")
    matching = [i for i, form in enumerate(identity.forms) if isinstance(stored_values, dict) and
                form(stored_values) == stored]  # fmt: skip
    if not matching:
        raise ResultsFolderError(f"{refusal}; {advice}")
    assert isinstance(stored_values, dict)
    differences, added = profile_differences(stored_values, identity.values, identity.defaults)
    if differences:
        raise ResultsFolderError(f"{refusal}: {'; '.join(differences)}; {advice}")
    older = "" if matching[0] == 0 else " under an older fingerprint (without the corpus hash)"
    return [f"{folder}: stored{older} before the profile field(s) {', '.join(added)} existed; the profile has "
            "them at their defaults, which is what the code did before"]  # fmt: skip


def check_code(folder: Path, metadata: dict[str, Any], git: dict[str, Any], allow_mixed: bool, kind: str) -> list[str]:
    """Refuse (ResultsFolderError) to add rows made by other code than the rows already in ``folder``
    (the invocations whose rows are in runs.csv), unless ``allow_mixed``; notes otherwise."""
    notes: list[str] = []
    ids, unnamed = invocations_with_rows(folder / "runs.csv")
    previous = metadata.get("invocations", [])
    writers = [inv for inv in previous if inv.get("id") in ids or (unnamed and not inv.get("id"))]
    if unnamed and not any(not inv.get("id") for inv in previous):
        writers.append({"git": metadata.get("git")})  # rows of a folder whose invocations were not kept
    mine = code_id(git)
    others = sorted({code_id(inv.get("git")) for inv in writers} - {mine})
    if others:
        message = f"results folder {folder} holds {kind} made by other code ({', '.join(others)}); this is {mine}"
        if not allow_mixed:
            raise ResultsFolderError(
                f"{message}. Mixing them would make the results depend on which code ran which row: rerun with "
                "--allow-mixed to add to them anyway (every row names its invocation, every invocation its "
                "code), or choose another --out"
            )
        notes.append(f"{message}: mixing them as asked (--allow-mixed)")
    return notes


def record_invocation(metadata: dict[str, Any], invocation: dict[str, Any], first_keys: Sequence[str]) -> None:
    """Append ``invocation`` to the folder's metadata; its ``first_keys`` (code, network, ...) go on
    top only when the folder has none yet: the folder's first values stay, each invocation keeps its own."""
    for key in first_keys:
        metadata.setdefault(key, invocation[key])
    metadata.setdefault("invocations", []).append(invocation)


def read_metadata(path: Path) -> dict[str, Any]:
    """The stored metadata (empty when there is none); a clear error when it is unreadable."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ResultsFolderError(f"{path}: unreadable ({err}); move it away or choose another --out") from None
    if not isinstance(data, dict):
        raise ResultsFolderError(f"{path}: not a JSON object; move it away or choose another --out")
    return data
