"""One look for every figure: seaborn's paper context, a colour-blind-safe palette, one colour and
marker per strategy (the same in Figure 8, Figure 9 and ``make compare``), sizes for one- and
two-column layouts, TrueType fonts in PDFs and byte-for-byte reproducible files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

from analysis.ownership import hand_to_invoking_user

#: Width of a one-column and a two-column figure in a two-column paper (inches).
ONE_COLUMN_IN = 3.3
TWO_COLUMN_IN = 7.0
PALETTE = "colorblind"
DPI = 300


@dataclass(frozen=True)
class StrategyStyle:
    """How one strategy looks everywhere: colour (index into the colour-blind palette), marker, and
    whether it runs on kernel sockets or on the userspace transport."""

    color_index: int
    marker: str
    family: str  # "kernel" or "userspace"


#: The strategies in the order they are listed and drawn.
STRATEGIES: dict[str, StrategyStyle] = {
    "tcp": StrategyStyle(7, "s", "kernel"),
    "mptcp": StrategyStyle(0, "o", "kernel"),
    "robe-sim": StrategyStyle(2, "^", "kernel"),
    "robe-timer": StrategyStyle(1, "v", "kernel"),
    "mptcp-user": StrategyStyle(9, "D", "userspace"),
    "robe-downgrade": StrategyStyle(3, "P", "userspace"),
    "robe-bbm": StrategyStyle(4, "X", "userspace"),
    "robe-esim": StrategyStyle(5, "*", "userspace"),
}
_UNKNOWN = StrategyStyle(8, "x", "other")
FAMILIES = ("kernel", "userspace", "other")


def style(strategy: str) -> StrategyStyle:
    """The style of ``strategy`` (a neutral one for strategies not listed)."""
    return STRATEGIES.get(strategy, _UNKNOWN)


def color(strategy: str) -> tuple[float, float, float]:
    """The strategy's colour."""
    rgb = sns.color_palette(PALETTE, 10)[style(strategy).color_index]
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def family(strategy: str) -> str:
    """``kernel``, ``userspace`` or ``other``."""
    return style(strategy).family


def ordered(strategies: Any) -> list[str]:
    """The strategies in the table's order (unknown ones last, alphabetically)."""
    names = list(STRATEGIES)
    return sorted(set(strategies), key=lambda s: (names.index(s) if s in names else len(names), s))


def apply_theme() -> None:
    """seaborn's paper context and the rc settings every figure relies on."""
    sns.set_theme(context="paper", style="ticks", palette=PALETTE, font="DejaVu Sans")
    plt.rcParams.update({
        "pdf.fonttype": 42,  # TrueType, not Type 3 (publishers' checkers reject Type 3)
        "ps.fonttype": 42,
        "svg.hashsalt": "robe-lab",
        "axes.grid": True,
        "grid.linewidth": 0.4,
        "grid.alpha": 0.5,
        "legend.frameon": False,
        "figure.dpi": 100,
        "savefig.dpi": DPI,
        "lines.linewidth": 1.2,
        "lines.markersize": 4,
        # Printed sizes for a 3.3 in column: 7-8 pt text, as in the papers' own figures.
        "font.size": 7.5,
        "axes.labelsize": 7.5,
        "axes.titlesize": 7.5,
        "xtick.labelsize": 6.5,
        "ytick.labelsize": 6.5,
        "legend.fontsize": 6.5,
        "axes.linewidth": 0.6,
        "xtick.major.width": 0.6,
        "ytick.major.width": 0.6,
        "xtick.major.size": 2.5,
        "ytick.major.size": 2.5,
        "ytick.minor.size": 1.5,
    })  # fmt: skip


def save(fig: Any, stem: Path) -> list[Path]:
    """Save ``stem``.png and ``stem``.pdf without time stamps (same data, same bytes); close the figure."""
    files = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(files[0], metadata={"Software": None})
    fig.savefig(files[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    hand_to_invoking_user(*files)
    return files
