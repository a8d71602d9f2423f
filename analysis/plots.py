"""``make plots``: regenerate every figure and report from stored results (no root, no network).

For each experiment 1 result folder under ``results/experiment1/``: Figure 8 (PNG, PDF),
``summary.csv`` and ``report.md``; for each experiment 2 folder under ``results/experiment2/``:
Figure 9, ``summary.csv`` and ``report.md`` (or only the folders given). Reports are also printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis import figure9
from analysis.figure8 import render
from analysis.report import write_report

RESULTS = Path(__file__).resolve().parent.parent / "results"


def experiment1_folders(base: Path = RESULTS / "experiment1") -> list[Path]:
    """Result folders holding both runs.csv and metadata.json."""
    return sorted(p.parent for p in base.glob("*/runs.csv") if (p.parent / "metadata.json").exists())


def experiment2_folders(base: Path = RESULTS / "experiment2") -> list[Path]:
    """Experiment 2 result folders holding both runs.csv and metadata.json."""
    return sorted(p.parent for p in base.glob("*/runs.csv") if (p.parent / "metadata.json").exists())


def _render(folder: Path) -> list[Path]:
    kind = json.loads((folder / "metadata.json").read_text()).get("kind")
    if kind == "experiment2":
        return figure9.render(folder)
    return [*render(folder), write_report(folder)]


def main(argv: list[str] | None = None) -> int:
    """Render every folder; exit 1 if none was found or one could not be read."""
    parser = argparse.ArgumentParser(prog="python -m analysis.plots", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="result folders (default: all stored ones)")
    parser.add_argument("--quiet", action="store_true", help="do not print the reports")
    args = parser.parse_args(argv)
    folders = args.folders or [*experiment1_folders(), *experiment2_folders()]
    if not folders:
        print(f"no experiment results under {RESULTS}", file=sys.stderr)
        return 1
    status = 0
    for folder in folders:
        try:
            files = _render(folder)
        except (OSError, KeyError, ValueError) as err:
            print(f"{folder}: cannot render: {err!r}", file=sys.stderr)
            status = 1
            continue
        print(f"{folder}: wrote {', '.join(f.name for f in files)}")
        if not args.quiet:
            print((folder / "report.md").read_text())
    return status


if __name__ == "__main__":
    sys.exit(main())
