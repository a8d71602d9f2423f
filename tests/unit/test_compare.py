"""make compare: metadata diff, per-cell tests, overlay figure, clear errors."""

import csv
import json
import shutil
from pathlib import Path

from analysis import compare
from analysis.schema import EXPERIMENT1

RESULTS = Path(__file__).resolve().parents[2] / "results"


def test_two_stored_profiles_compare_cell_by_cell(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main([str(RESULTS / "experiment1/paper"), str(RESULTS / "experiment1/userspace"), "--out",
                         str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "metadata that differ:" in printed and "profile.name" in printed and "userspace" in printed
    assert "git.commit" in printed and f"in {out}" in printed
    for name in ("compare.png", "compare.pdf", "compare.csv", "compare.md"):
        assert (out / name).stat().st_size > 0
    text = (out / "compare.md").read_text()
    assert "## connect() → accept()" in text and "## connect() → request at server" in text
    # Cells in common: mptcp and robe-sim at 0, 50 and 100 %, both metrics.
    with (out / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["strategy"], float(r["loss_pct"])) for r in rows} == {(s, loss) for s in ("mptcp", "robe-sim")
                                                                     for loss in (0.0, 50.0, 100.0)}  # fmt: skip
    assert len(rows) == 12


def _shifted_copy(source: Path, target: Path, shift_ms: float) -> Path:
    target.mkdir(parents=True)
    shutil.copy(source / "metadata.json", target / "metadata.json")
    with (source / "runs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (target / "runs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EXPERIMENT1.names)
        for row in rows:
            if row["status"] == "ok":
                for column in ("setup_ms", "accept_ms"):
                    row[column] = f"{float(row[column]) + shift_ms:.3f}"
            # Columns added after the stored file was written: empty, as the schema reads them.
            writer.writerow(EXPERIMENT1.format_row({**dict.fromkeys(EXPERIMENT1.names, ""), **row}))
    return target


def test_a_real_shift_is_found_and_none_is_not(tmp_path):
    source = RESULTS / "experiment1" / "asymmetric"
    same = _shifted_copy(source, tmp_path / "same", 0.0)
    slower = _shifted_copy(source, tmp_path / "slower", 5.0)
    _, runs = compare.load_runs([source, same, slower])
    tests = compare.cell_tests("experiment1", runs, ["accept"])
    by_other = {other: group for other, group in tests.groupby("other")}
    assert not by_other[runs[1].label]["differs"].any()
    shifted = by_other[runs[2].label]
    assert shifted["differs"].all() and shifted["diff"].round(3).eq(5.0).all()
    assert (shifted["diff_ci_low"] <= 5.0).all() and (shifted["diff_ci_high"] >= 5.0).all()
    assert compare.metadata_diff(runs[:2]).empty


def test_experiment2_folders_compare(tmp_path):
    out, text = compare.compare([RESULTS / "experiment2/paper", RESULTS / "experiment2/mahimahi"], tmp_path / "c")
    assert "profile.corpus" in text and (out / "compare.png").exists()
    # The corpora share one site: google.com, with both strategies.
    assert "google.com    mptcp experiment2/mahimahi" in text and "google.com robe-sim" in text


def test_errors_are_clear(tmp_path, capsys):
    assert compare.main([str(RESULTS / "experiment1/paper")]) == 2
    assert "two or more result folders" in capsys.readouterr().err
    assert compare.main([str(RESULTS / "experiment1/paper"), str(RESULTS / "experiment2/paper"), "--out",
                         str(tmp_path)]) == 2  # fmt: skip
    assert "different experiments" in capsys.readouterr().err
    assert compare.main([str(RESULTS / "experiment1/paper"), str(tmp_path / "nothing")]) == 2
    assert "not a result folder" in capsys.readouterr().err


def test_default_output_folder_is_named_after_the_runs():
    _, runs = compare.load_runs([RESULTS / "experiment1/paper", RESULTS / "experiment1/asymmetric"])
    assert compare.default_out(runs) == RESULTS / "compare" / "experiment1_paper--experiment1_asymmetric"
    assert json.loads((RESULTS / "experiment1/paper/metadata.json").read_text())["kind"] == "experiment1"
