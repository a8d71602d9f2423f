"""The sweep runner's promises: no row lost, duplicated or corrupted; Ctrl-C and full disks handled;
a results folder resumed only by the same profile, corpus and code, one runner at a time."""

import csv
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from analysis.schema import STATUSES, Column, Schema
from experiments.metadata import write_json
from experiments.profile import load_profile
from experiments.profile2 import load_profile2
from experiments.runs_folder import (
    ProfileIdentity,
    ResultsFolderError,
    check_code,
    check_profile,
    code_id,
    lock_folder,
    repair_runs_csv,
)
from experiments.sweep import Sweep, SweepResult, append_row, finished_run_ids
from topologies.interrupts import deferred_interrupts
from topologies.links import PROJECT_ROOT
from webreplay.siteindex import CORPUS_DIR, content_hash

#: A small row schema; the sweep validates every row it writes through it.
SCHEMA = Schema("test", (Column("run_id", "text", "id"), Column("status", "text", "status", choices=STATUSES),
                         Column("value", "float", "a value", empty=True), Column("error", "text", "why", empty=True),
                         Column("invocation", "text", "who wrote it", empty=True)))  # fmt: skip
FIELDS = SCHEMA.names


def _row(run_id: str, status: str = "ok", **extra: str) -> dict[str, str]:
    return {"run_id": run_id, "status": status, "value": "1.5", "error": "", "invocation": "", **extra}


def _sweep(runs_csv: Path, run, workers=("w0", "w1"), **kwargs) -> Sweep[str, str]:
    return Sweep(list(workers), run=run, error_row=lambda w, item, err: _row(item, "error", error=repr(err)),
                 runs_csv=runs_csv, schema=SCHEMA, desc="test", **kwargs)  # fmt: skip


def _read(runs_csv: Path) -> list[list[str]]:
    with runs_csv.open(newline="") as handle:
        return list(csv.reader(handle))


def test_a_row_cut_short_is_set_aside_rerun_and_the_next_row_starts_on_a_fresh_line(tmp_path):
    runs_csv = tmp_path / "runs.csv"
    lock = threading.Lock()
    for run_id in ("r0", "r1"):
        append_row(runs_csv, _row(run_id), lock, SCHEMA)
    with runs_csv.open("a") as handle:  # the runner died while writing r2: cut after its status field
        handle.write("r2,ok,2.")
    assert finished_run_ids(runs_csv) == {"r0", "r1"}  # a cut row never counts as finished

    notes = repair_runs_csv(runs_csv, FIELDS)
    assert len(notes) == 1 and "cut short" in notes[0]
    partial = list(tmp_path.glob("runs.csv.partial-*"))
    assert len(partial) == 1 and partial[0].read_text() == "r2,ok,2."
    result = _sweep(runs_csv, lambda worker, item: _row(item, error="two\nlines")).execute(["r2", "r3"])
    assert result.exit_status() == 0
    rows = _read(runs_csv)
    assert rows[0] == FIELDS and all(len(row) == len(FIELDS) for row in rows)
    assert sorted(row[0] for row in rows[1:]) == ["r0", "r1", "r2", "r3"]  # none lost, none twice
    assert runs_csv.read_text().count("\n") == 5  # one line per row, even with a newline in a value


def test_malformed_rows_are_moved_aside_and_a_header_without_new_columns_gains_them(tmp_path):
    runs_csv = tmp_path / "runs.csv"
    runs_csv.write_text("run_id,status,value,error\r\nr0,ok,1,\r\nr1,ok,1,,extra,fields\r\nr2,failed,,x\r\n")
    notes = repair_runs_csv(runs_csv, FIELDS)
    assert any("1 malformed row" in n for n in notes) and any("'invocation'" in n for n in notes)
    rows = _read(runs_csv)
    assert rows == [FIELDS, ["r0", "ok", "1", "", ""], ["r2", "failed", "", "x", ""]]
    assert next(tmp_path.glob("runs.csv.rejected-*")).read_bytes() == b"r1,ok,1,,extra,fields\r\n"
    assert repair_runs_csv(runs_csv, FIELDS) == []  # well-formed now: left as it is
    runs_csv.write_text("run_id,status,surprise\r\n")
    with pytest.raises(ResultsFolderError, match="not the ones this code writes"):
        repair_runs_csv(runs_csv, FIELDS)


def test_a_row_that_cannot_be_written_stops_the_sweep_and_is_reported(tmp_path):
    started = []

    def run(worker, item):
        started.append(item)
        return _row(item)

    result = _sweep(Path("/dev/full"), run).execute([f"r{i}" for i in range(20)])  # every write: ENOSPC
    assert result.unwritten and result.exit_status() == 1 and not result.interrupted
    assert {run_id for run_id, _ in result.unwritten} <= set(started) and len(started) < 20
    assert "could not be written" in result.report()[0] and result.unwritten[0][0] in result.report()[0]


def test_every_row_carries_the_invocation_that_wrote_it(tmp_path):
    runs_csv = tmp_path / "runs.csv"
    _sweep(runs_csv, lambda w, item: _row(item), row_stamp={"invocation": "inv-1"}).execute(["a", "b"])
    with runs_csv.open(newline="") as handle:
        assert {row["invocation"] for row in csv.DictReader(handle)} == {"inv-1"}


def test_ctrl_c_interrupts_every_worker_waits_for_them_and_holds_a_second_ctrl_c(tmp_path):
    release = threading.Event()
    stopping = threading.Event()
    interrupted: list[str] = []
    running = threading.Barrier(3)
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    # Python keeps SIGINT ignored when started so (a command run with '&' from a script): set what
    # a terminal's Ctrl-C meets, as the runners' main() does.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def run(worker, item):
        running.wait(5)
        release.wait(10)  # an attempt in flight until its worker is interrupted
        return _row(item, "failed")

    def interrupt(worker):
        interrupted.append(worker)
        if len(interrupted) == 2:
            stopping.set()
            threading.Timer(0.5, release.set).start()  # the attempts take a while to die

    def press_ctrl_c_twice():
        # As a terminal's Ctrl-C, but aimed at the main thread, which Python runs handlers in.
        running.wait(5)
        signal.pthread_kill(main, signal.SIGINT)
        stopping.wait(5)
        signal.pthread_kill(main, signal.SIGINT)  # while the workers are still stopping

    threading.Thread(target=press_ctrl_c_twice).start()
    try:
        result = _sweep(tmp_path / "runs.csv", run, interrupt=interrupt).execute(["a", "b", "c"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.interrupted and result.exit_status() == 130
    assert sorted(interrupted) == ["w0", "w1"] and not result.busy_workers
    assert not (tmp_path / "runs.csv").exists()  # attempts killed by Ctrl-C are not results


def test_signals_held_during_a_teardown_are_raised_after_it():
    done = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts("testing"):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append("teardown finished")
    assert done == ["teardown finished"]
    with deferred_interrupts("testing", reraise=False) as held:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert held == [signal.SIGTERM]
    # Nested (a network's teardown inside the runner's): the inner one finishes, the outer decides.
    steps = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts("all") as outer:
        with deferred_interrupts("one network"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        steps.append("inner done, outer goes on")
        with deferred_interrupts("another network"):
            steps.append("the next teardown runs too")
    assert steps == ["inner done, outer goes on", "the next teardown runs too"] and outer == [signal.SIGINT]


def test_one_runner_per_results_folder(tmp_path):
    held = rf"in use by another runner \(experiment1, pid {os.getpid()}"
    with lock_folder(tmp_path, "experiment1"), pytest.raises(ResultsFolderError, match=held), \
            lock_folder(tmp_path, "experiment2"):  # fmt: skip
        pass
    with lock_folder(tmp_path, "experiment2"):  # released
        pass


def _folder(tmp_path: Path, commit: str, invocation: str, dirty: bool = False) -> dict[str, object]:
    append_row(tmp_path / "runs.csv", _row("r0", invocation=invocation), threading.Lock(), SCHEMA)
    git = {"commit": commit, "dirty": dirty, **({"diff_sha256": "abc"} if dirty else {})}
    return {"profile_fingerprint": "fp1", "git": git, "invocations": [{"id": invocation, "git": git}]}


def test_a_resume_by_other_code_is_refused_unless_mixing_is_allowed(tmp_path):
    metadata = _folder(tmp_path, "aaaa", "inv-1")
    assert check_code(tmp_path, metadata, {"commit": "aaaa", "dirty": False}, False, "runs") == []
    with pytest.raises(ResultsFolderError, match=r"made by other code \(aaaa\); this is bbbb"):
        check_code(tmp_path, metadata, {"commit": "bbbb", "dirty": False}, False, "runs")
    with pytest.raises(ResultsFolderError, match="other code"):  # same commit, modified tree
        check_code(tmp_path, metadata, {"commit": "aaaa", "dirty": True, "diff_sha256": "f00"}, False, "runs")
    notes = check_code(tmp_path, metadata, {"commit": "bbbb", "dirty": False}, True, "runs")
    assert notes and "--allow-mixed" in notes[0]
    assert code_id({"commit": "c", "dirty": True}) == "c+modified:unknown"


def test_rows_older_than_the_invocation_column_are_judged_by_the_folders_code(tmp_path):
    (tmp_path / "runs.csv").write_text("run_id,status,value,error\r\nr0,ok,1,\r\n")
    metadata = {"git": {"commit": "old", "dirty": False}, "invocations": [{"git": {"commit": "old", "dirty": False}}]}
    with pytest.raises(ResultsFolderError, match=r"other code \(old\)"):
        check_code(tmp_path, metadata, {"commit": "new", "dirty": False}, False, "runs")


def _identity(values: dict[str, object], corpus: str = "c1") -> ProfileIdentity:
    def current(v: Mapping[str, object]) -> str:
        return json.dumps({"profile": v, "corpus": corpus}, sort_keys=True)

    def older(v: Mapping[str, object]) -> str:  # before the corpus was part of it
        return json.dumps(v, sort_keys=True)

    return ProfileIdentity(values, {"reps": 30, "client": "wget"}, (current, older))


def test_another_profile_or_corpus_is_refused_and_an_older_fingerprint_accepted_with_a_note(tmp_path):
    identity = _identity({"name": "p", "reps": 30})
    with pytest.raises(ResultsFolderError, match="different profile or corpus"):
        check_profile(tmp_path, {"profile_fingerprint": "x"}, identity, "loads")
    assert check_profile(tmp_path, {"profile_fingerprint": identity.fingerprint()}, identity, "loads") == []
    older = json.dumps({"name": "p", "reps": 30}, sort_keys=True)
    assert "older fingerprint" in check_profile(tmp_path, {"profile_fingerprint": older}, identity, "loads")[0]


def test_a_folder_stored_before_a_field_existed_resumes_when_the_field_is_at_its_default(tmp_path):
    stored = {"name": "p", "reps": 30}
    meta = {"profile": stored, "profile_fingerprint": _identity(stored).fingerprint()}
    notes = check_profile(tmp_path, meta, _identity({**stored, "client": "wget"}), "loads")
    assert len(notes) == 1 and "client" in notes[0] and "default" in notes[0]
    # the older form without the corpus hash: accepted the same way, and said
    legacy = {"profile": stored, "profile_fingerprint": json.dumps(stored, sort_keys=True)}
    assert "older fingerprint" in check_profile(tmp_path, legacy, _identity({**stored, "client": "wget"}), "loads")[0]
    # the new field not at its default, a changed field, or another corpus: refused, naming what differs
    with pytest.raises(ResultsFolderError, match=r"client = 'chromium' \(a field added since"):
        check_profile(tmp_path, meta, _identity({**stored, "client": "chromium"}), "loads")
    with pytest.raises(ResultsFolderError, match="reps: stored 30, profile 10"):
        check_profile(tmp_path, meta, _identity({"name": "p", "reps": 10, "client": "wget"}), "loads")
    with pytest.raises(ResultsFolderError, match="different profile or corpus") as refused:
        check_profile(tmp_path, meta, _identity({**stored, "client": "wget"}, corpus="c2"), "loads")
    assert "added since" not in str(refused.value)  # its stored profile does not give its fingerprint: no field list


def test_every_stored_experiment_folder_is_accepted_by_its_profile():
    for folder in sorted((PROJECT_ROOT / "results").glob("experiment[12]/*/metadata.json")):
        kind, name = folder.parent.parent.name, folder.parent.name
        profile_file = PROJECT_ROOT / "experiments" / "profiles" / f"{kind}-{name}.toml"
        if not profile_file.exists():
            continue  # a kept record of an earlier code (NOTE.md says which), or a derived analysis
        profile = load_profile2(name) if kind == "experiment2" else load_profile(name)
        check_profile(folder.parent, json.loads(folder.read_text()), profile.identity(), "rows")


def test_the_corpus_hash_follows_the_recordings_content(tmp_path):
    root = tmp_path / "corpus"
    (root / "har").mkdir(parents=True)
    for name in ("sites.toml", "adblock.txt", "har/google.com.har", "har/baidu.com.har"):
        shutil.copy(CORPUS_DIR / name, root / name)
    before = content_hash("har", ["google.com"], root)
    assert before == content_hash("har", ["google.com"], root)
    assert before != content_hash("har", ["google.com", "baidu.com"], root)
    recording = root / "har" / "google.com.har"
    recording.write_bytes(recording.read_bytes().replace(b"google", b"googlf", 1))
    assert content_hash("har", ["google.com"], root) != before


def test_metadata_is_written_durably(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "metadata.json"
    write_json(path, {"a": 1})
    assert path.stat().st_ino in synced  # the file's content, before the rename
    assert tmp_path.stat().st_ino in synced  # the folder, after it
    assert not list(tmp_path.glob("*.tmp"))


def test_the_exit_status_says_what_happened():
    assert SweepResult({"ok": 3, "error": 0}, False).exit_status() == 0
    assert SweepResult({"ok": 3, "error": 1}, False).exit_status() == 1
    assert SweepResult({"ok": 3}, True).exit_status() == 130
    assert SweepResult({"ok": 3}, True, unwritten=[("r1", "No space left on device")]).exit_status() == 1


def test_the_ablation_runner_passes_allow_mixed_to_every_level(monkeypatch):
    # Each level is an experiment 2 sweep (folder lock, repair, code check): the runner only adds
    # the levels, and must let the user allow mixing as experiment 2 does.
    from experiments import ablation

    seen = []

    def run_sweep(options):
        seen.append(options)
        return 0

    monkeypatch.setattr(ablation, "run_sweep", run_sweep)
    names = ablation.ablation_profiles()[:2]
    assert ablation.main(["--only", *names, "--no-analysis", "--allow-mixed"]) == 0
    assert [o.profile.name for o in seen] == names and all(o.allow_mixed for o in seen)
    seen.clear()
    assert ablation.main(["--only", names[0], "--no-analysis"]) == 0
    assert not seen[0].allow_mixed


def test_side_rows_of_a_run_that_is_done_again_are_set_aside(tmp_path):
    # Experiment 2 appends a load's connections to connections.csv before runs.csv takes its row:
    # after a kill in between, the rerun would add them a second time.
    from experiments.runs_folder import set_aside_rows_of_unfinished_runs

    fields = ["run_id", "conn", "bytes"]
    side = tmp_path / "connections.csv"
    side.write_text("run_id,conn,bytes\r\nr0,1,10\r\nr0,2,20\r\nr1,1,30\r\nr1,2,4")  # r1 cut, no runs.csv row
    notes = repair_runs_csv(side, fields) + set_aside_rows_of_unfinished_runs(side, fields, {"r0"})
    assert any("cut short" in n for n in notes) and any("1 run(s)" in n and "r1" in n for n in notes)
    assert _read(side) == [fields, ["r0", "1", "10"], ["r0", "2", "20"]]
    (aside,) = tmp_path.glob("connections.csv.unfinished-*")
    assert _read(aside) == [fields, ["r1", "1", "30"]]
    assert set_aside_rows_of_unfinished_runs(side, fields, {"r0"}) == []  # nothing more to do


def test_later_workers_join_as_they_are_built_and_a_failed_build_stops_the_running_ones(tmp_path):
    runs_csv = tmp_path / "runs.csv"
    seen: list[str] = []

    def run(worker: str, item: str) -> dict[str, str]:
        seen.append(worker)
        time.sleep(0.02)
        return _row(item)

    def built():
        for name in ("w1", "w2"):
            time.sleep(0.1)  # building a network takes a while; w0 already runs attempts
            yield name

    result = _sweep(runs_csv, run, workers=("w0",), more_workers=built()).execute([f"r{i}" for i in range(40)])
    assert result.exit_status() == 0 and len(_read(runs_csv)) == 41
    assert set(seen) == {"w0", "w1", "w2"} and seen[0] == "w0"

    stopped: list[str] = []

    def broken():
        time.sleep(0.1)
        raise RuntimeError("pre-flight failed on the second network")
        yield "never"

    sweep = _sweep(tmp_path / "other.csv", run, workers=("w0",), more_workers=broken(), interrupt=stopped.append)
    with pytest.raises(RuntimeError, match="pre-flight"):
        sweep.execute([f"r{i}" for i in range(400)])
    assert stopped == ["w0"]  # the running worker was stopped (and joined) before the error went up
