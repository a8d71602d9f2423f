"""Small helpers the experiment 2 analyses share: a DataFrame as a Markdown table, a figure saved as PNG
and PDF, and the command line that runs one analysis per results folder."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd


def markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A DataFrame as a Markdown table (index first), floats rounded to ``digits``, NaN empty."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = [str(table.index.name or ""), *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        lines.append("| " + " | ".join([str(index), *(cell(v) for v in row)]) + " |")
    return "\n".join(lines)


def save_png_pdf(fig: Any, stem: Path) -> list[Path]:
    """Save ``fig`` as ``stem``.png (150 dpi) and ``stem``.pdf (no creation date: reruns give the same file)."""
    files = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for file in files:
        fig.savefig(file, dpi=150, metadata={"CreationDate": None} if file.suffix == ".pdf" else None)
    return files


def per_folder_main(prog: str, doc: str, handler: Callable[[Path], object], argv: Sequence[str] | None) -> int:
    """``python -m <prog> FOLDER [FOLDER ...]``: ``handler`` on each folder, printing what it returns."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for folder in args.folders:
        result = handler(folder)
        for line in result if isinstance(result, list) else [result]:
            print(line)
    return 0
