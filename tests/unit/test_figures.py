"""Every stored result folder renders (make plots on copies): the files, their sizes, TrueType fonts
only, the same bytes from the same data, and one style per strategy in every figure."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from analysis import plots
from analysis.schema import read_runs
from analysis.style import _CB, DPI, ONE_COLUMN_IN, STRATEGIES, TWO_COLUMN_IN, style

RESULTS = Path(__file__).resolve().parents[2] / "results"
STORED = [*plots.result_folders(RESULTS / "experiment1"), *plots.result_folders(RESULTS / "experiment2")]


def _copy(folder: Path, tmp_path: Path) -> Path:
    """The folder's data (not its figures) in ``tmp_path``; the captures linked, not copied."""
    copy = tmp_path / folder.name
    copy.mkdir()
    for name in ("runs.csv", "metadata.json", "connections.csv"):
        if (folder / name).exists():
            shutil.copy(folder / name, copy / name)
    if (folder / "pcap").is_dir():
        (copy / "pcap").symlink_to(folder / "pcap")
    return copy


def _fonts(pdf: Path) -> list[str]:
    """Font types of a PDF as pdffonts lists them (poppler-utils, installed by make setup)."""
    out = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()[2:] if line.strip()]


def test_every_stored_folder_is_found():
    names = {f"{f.parent.name}/{f.name}" for f in STORED}
    assert {"experiment1/paper", "experiment1/userspace", "experiment2/paper", "experiment2/mahimahi"} <= names


@pytest.mark.parametrize("folder", STORED, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_stored_folder_renders(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    assert plots.main(["--quiet", str(copy)]) == 0
    timeline = json.loads((folder / "metadata.json").read_text()).get("timeline", False)
    figure = "figure9" if folder.parent.name == "experiment2" else "figure8"
    stems = [("outage", TWO_COLUMN_IN)] if timeline else [(figure, ONE_COLUMN_IN), (f"{figure}-wide", TWO_COLUMN_IN)]
    for stem, width_in in stems:
        with Image.open(copy / f"{stem}.png") as image:
            assert image.width == round(width_in * DPI)
            assert image.height < 2.5 * image.width
        fonts = _fonts(copy / f"{stem}.pdf")
        assert fonts and all("TrueType" in line and "Type 3" not in line for line in fonts), fonts
        assert b"/Type3" not in (copy / f"{stem}.pdf").read_bytes()
    report = (copy / "report.md").read_text()
    assert report.startswith("# Experiment")
    if timeline:  # paths that change over time: set-up against attempt start, no cells
        assert "## Acceptance" in report and "## Cost of robustness" in report
        return
    assert (copy / "summary.csv").stat().st_size > 0
    if figure == "figure8":
        assert "## connect() → accept()" in report and "## connect() → request at server" in report
    # Issue 11's analyses, where the folder has their data, come out the same as the stored ones.
    for name in ("where_time_goes.csv", "packets.csv", "overhead.csv"):
        if (folder / name).exists():
            assert (copy / name).read_bytes() == (folder / name).read_bytes(), name
    if (folder / "connections.csv").exists():
        sites = set(read_runs(folder)["site"])
        assert {p.name for p in copy.glob("waterfall_*.png")} == {f"waterfall_{site}.png" for site in sites}


def test_stored_figures_embed_truetype_fonts_only():
    pdfs = sorted(RESULTS.glob("**/*.pdf"))
    assert len(pdfs) >= 30
    for pdf in pdfs:
        fonts = _fonts(pdf)
        assert fonts and all("TrueType" in line for line in fonts), (pdf, fonts)


@pytest.mark.parametrize("name", ["experiment1/asymmetric", "experiment2/abl-synthetic"])
def test_same_data_gives_the_same_bytes(name, tmp_path):
    # experiment 1: Figure 8 and its reports; experiment 2: Figure 9 and issue 11's timelines too.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _copy(RESULTS / name, tmp_path / "a"), _copy(RESULTS / name, tmp_path / "b")
    for copy in (first, second):
        assert plots.main(["--quiet", str(copy)]) == 0
    names = sorted(p.name for p in first.iterdir() if p.suffix in (".png", ".pdf", ".csv", ".md"))
    expected = (
        {"figure8.pdf", "figure8-wide.png", "report.md"}
        if name.startswith("experiment1")
        else {"where_time_goes.png", "waterfall_30x1k.png", "figure9.pdf", "improvements.csv"}
    )
    assert expected <= set(names)
    for produced in names:
        assert (first / produced).read_bytes() == (second / produced).read_bytes(), produced


def test_a_broken_folder_is_reported_not_rendered(tmp_path, capsys):
    copy = _copy(RESULTS / "experiment1" / "asymmetric", tmp_path)
    with (copy / "runs.csv").open("a") as handle:
        handle.write("robe-sim-L0-r99,x,robe-sim,0\n")
    assert plots.main(["--quiet", str(copy)]) == 1
    assert f"{copy / 'runs.csv'}:122: 4 fields, the header has 22 (a truncated row)" in capsys.readouterr().err


def test_every_stored_strategy_has_its_own_colour_blind_safe_style():
    stored = {s for folder in STORED for s in read_runs(folder)["strategy"].unique()}
    assert stored <= set(STRATEGIES), stored - set(STRATEGIES)
    looks = [(style(s).color, style(s).marker, style(s).hatch) for s in STRATEGIES]
    assert len(set(looks)) == len(looks) and len({m for _, m, _ in looks}) == len(looks)  # markers alone suffice
    for strategy, look in STRATEGIES.items():
        assert look.color in _CB or strategy == "direct", strategy  # the colour-blind palette
        twin = strategy.split("+")[0]
        if twin != strategy:  # a scheduler variant: its twin's colour, told apart by hatch and marker
            assert look.color == style(twin).color and look.hatch and not style(twin).hatch


def test_analysis_reads_results_only_through_the_schema():
    sources = {p.name: p.read_text() for p in (RESULTS.parent / "analysis").glob("*.py")}
    for name, text in sources.items():
        assert "DictReader" not in text and "read_csv(" not in text, name
