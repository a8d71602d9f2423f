"""``make plots``: regenerate every figure and report from stored results (no root, no network).

For each experiment 1 result folder under ``results/experiment1/``: Figure 8 (one- and two-column,
PNG and PDF), ``summary.csv`` and ``report.md``; for each experiment 2 folder under
``results/experiment2/``: Figure 9, ``summary.csv``, ``improvements.csv`` and ``report.md``, plus the
connection waterfalls, the packet report and the overhead table where the folder has their data (or
only the folders given); and the ablation (``results/experiment2/ablation/``). Reports are also
printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analysis import ablation, browser, figure8, figure9, outage, outage2, overhead, packets, timelines
from analysis.experiment1_cells import DEFAULT_METRIC, METRICS
from analysis.report import write_report
from analysis.schema import EXPERIMENT2, SchemaError, read_runs
from robe_lab.cliparse import command_parser
from robe_lab.paths import results_dir

RESULTS = results_dir()


def result_folders(base: Path) -> list[Path]:
    """Result folders under ``base`` holding both runs.csv and metadata.json."""
    return sorted(p.parent for p in base.glob("*/runs.csv") if (p.parent / "metadata.json").exists())


def render(folder: Path, metric: str = DEFAULT_METRIC) -> list[Path]:
    """Every figure, table and report of one result folder (by its metadata's kind)."""
    metadata = json.loads((folder / "metadata.json").read_text())
    kind = metadata.get("kind")
    if metadata.get("timeline"):  # paths that change over time: set-up (load) time against start
        return outage2.render(folder) if kind == "experiment2" else outage.render(folder)
    if kind == "experiment2":
        return [*figure9.render(folder), *experiment2_extras(folder)]
    loaded = figure8.load(folder)
    return [*figure8.render(folder, metric, loaded[2]), write_report(folder, loaded)]


def experiment2_extras(folder: Path) -> list[Path]:
    """Issue 11's analyses where the folder has their data: connection timelines (waterfalls, where
    the time goes), packet captures (packets.md) and, for a zero-delay run with a ``direct`` client,
    the overhead table; for a browser run, browser.md and the wget/browser pair (issue 12)."""
    files: list[Path] = []
    if (folder / "connections.csv").exists():
        files += timelines.write_figures(folder)
    if browser.is_browser_run(folder):  # issue 12: the browser's numbers, and next to wget's
        files += browser.write_report(folder)
    if (folder / "pcap").is_dir():
        packets.write_report(folder)
        if (folder / "packets.md").exists():
            files.append(folder / "packets.md")
    profile = json.loads((folder / "metadata.json").read_text()).get("profile", {})
    delays = [profile.get("internet_rtt_ms"), *(profile.get(p, {}).get("rtt_ms") for p in ("lte", "dsl"))]
    direct = bool(read_runs(folder, EXPERIMENT2)["strategy"].eq(overhead.BASELINE).any())
    wget_client = not browser.is_browser_run(folder)  # the fit is of wget's wall time
    if wget_client and direct and delays == [0, 0, 0] and (folder / "connections.csv").exists():  # no delay
        overhead.write_report(folder)
        files.append(folder / "overhead.md")
    return files


def main(argv: list[str] | None = None) -> int:
    """Render every folder; exit 1 if none was found or one could not be read."""
    parser = command_parser("analysis.plots", __doc__)
    parser.add_argument("folders", nargs="*", type=Path, help="result folders (default: all stored ones)")
    parser.add_argument(
        "--metric",
        choices=list(METRICS),
        default=DEFAULT_METRIC,
        help="Figure 8's one-column metric (default: accept, the paper's connect() -> accept())",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the reports")
    args = parser.parse_args(argv)
    folders = args.folders or [*result_folders(RESULTS / "experiment1"), *result_folders(RESULTS / "experiment2")]
    if not folders:
        print(f"no experiment results under {RESULTS}", file=sys.stderr)
        return 1
    status = 0
    levels = [RESULTS / "experiment2" / v.folder for v in ablation.LEVELS if not v.baseline]
    if not args.folders and any(level.exists() for level in levels):
        ablation.run(RESULTS / "experiment2")
        print(f"{RESULTS / 'experiment2' / 'ablation'}: wrote ablation.md, improvement_vs_factor.png")
    for folder in folders:
        try:
            files = render(folder, args.metric)
        except (OSError, KeyError, ValueError, SchemaError) as err:
            print(f"{folder}: cannot render: {err}", file=sys.stderr)
            status = 1
            continue
        print(f"{folder}: wrote {', '.join(f.name for f in files)}")
        if not args.quiet:
            print((folder / "report.md").read_text())
    return status


if __name__ == "__main__":
    sys.exit(main())
