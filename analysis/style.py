"""One look for every figure: seaborn's paper context, a colour-blind-safe palette, one colour,
marker and hatch per strategy (the same in Figure 8, Figure 9, ``make compare``, the ablation, the
timelines and the outage figure; the strategies' own come from the registry, ``robe.strategies``),
sizes for one- and two-column layouts, TrueType fonts in PDFs and byte-for-byte reproducible files.

Colours come from seaborn's ``colorblind`` palette (Okabe-Ito-like; distinguishable with the
common colour-vision deficiencies), and no strategy relies on colour alone: each has its own
marker, and the variants that share a colour with their twin differ by hatch and marker. The
variants: ``+kernel-default`` (a userspace strategy scheduling by the kernel's default rule) keeps
its strategy's colour with a ``////`` hatch; the RobE_IPS strategies keep their base's colour
(``robe-ips``: ``mptcp``'s, ``robe-ips-timer``: ``robe-timer``'s, ``robe-ips-sim``: ``robe-sim``'s) with
an ``xxxx`` hatch; the ``direct`` clients (wget without the client proxy) are dark grey and pink
with a ``....`` hatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.patches import Patch

from analysis.ownership import hand_to_invoking_user
from robe import strategies as registry

#: Width of a one-column and a two-column figure in a two-column paper (inches).
ONE_COLUMN_IN = 3.3
TWO_COLUMN_IN = 7.0
PALETTE = "colorblind"
#: seaborn's colour-blind palette, by index (blue, orange, green, vermilion, purple, brown, pink,
#: grey, yellow, sky blue).
_CB = sns.color_palette(PALETTE, 10).as_hex()
DPI = 300
#: Hatch of the ``+kernel-default`` scheduler variants and of the clients without a proxy.
KERNEL_DEFAULT_HATCH = "////"
DIRECT_HATCH = "...."
#: The frame of a strategy's name where colours encode something else: its hatch as a line style.
FRAME_LINESTYLES = {"": "-", KERNEL_DEFAULT_HATCH: "--", DIRECT_HATCH: ":", registry.IPS_HATCH: "-."}


@dataclass(frozen=True)
class StrategyStyle:
    """How one strategy looks everywhere: colour (hex), marker, hatch (bars) and family (``kernel``
    sockets, ``userspace`` transport, ``direct`` client without proxy, ``other``)."""

    color: str
    marker: str
    family: str
    hatch: str = ""


#: Userspace strategies drawn also with the kernel's default scheduler (``<name>+kernel-default``).
KERNEL_DEFAULT_VARIANTS = {"mptcp-user": "d", "robe-downgrade": "p"}  # name -> the variant's marker


def _strategy_styles() -> dict[str, StrategyStyle]:
    """The ``direct`` clients, then the registry's strategies (their styles are the registry's), the
    ``+kernel-default`` variants after the last strategy that has one."""
    styles = {
        "direct": StrategyStyle("#3a3a3a", "h", "direct", DIRECT_HATCH),
        "direct-mptcp": StrategyStyle(_CB[6], "H", "direct", DIRECT_HATCH),
    }
    variants_after = list(KERNEL_DEFAULT_VARIANTS)[-1]
    for strategy in registry.STRATEGIES.values():
        look = strategy.style
        styles[strategy.name] = StrategyStyle(look.colour, look.marker, strategy.kind.value, look.hatch)
        if strategy.name == variants_after:
            for base, variant_marker in KERNEL_DEFAULT_VARIANTS.items():
                twin = registry.get_strategy(base).style
                styles[f"{base}+kernel-default"] = StrategyStyle(twin.colour, variant_marker, "userspace",
                                                                 KERNEL_DEFAULT_HATCH)  # fmt: skip
    return styles


#: The strategies in the order they are listed and drawn.
STRATEGIES: dict[str, StrategyStyle] = _strategy_styles()
_UNKNOWN = StrategyStyle(_CB[8], "x", "other")
FAMILIES = ("kernel", "userspace", "direct", "other")


def style(strategy: str) -> StrategyStyle:
    """The style of ``strategy`` (a neutral one for strategies not listed)."""
    return STRATEGIES.get(strategy, _UNKNOWN)


def color(strategy: str) -> tuple[float, float, float]:
    """The strategy's colour as an RGB triple."""
    rgb = matplotlib.colors.to_rgb(style(strategy).color)
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def hatch(strategy: str) -> str:
    """The strategy's hatch for bars (empty for most)."""
    return style(strategy).hatch


def marker(strategy: str) -> str:
    """The strategy's marker."""
    return style(strategy).marker


def family(strategy: str) -> str:
    """``kernel``, ``userspace``, ``direct`` or ``other``."""
    return style(strategy).family


def ordered(strategies: Any) -> list[str]:
    """The strategies in the table's order (unknown ones last, alphabetically)."""
    names = list(STRATEGIES)
    return sorted(set(strategies), key=lambda s: (names.index(s) if s in names else len(names), s))


def legend_name(strategy: str) -> str:
    """The strategy's name for a legend: the scheduler variant on its own line (narrow columns)."""
    return strategy.replace("+", "\n+", 1)


def pair_name(classic: str, robe: str) -> str:
    """A (classic, RobE) pair for a legend, in two or three short lines."""
    base_classic, _, variant = classic.partition("+")
    base_robe = robe.partition("+")[0]
    return f"{base_robe}\nvs {base_classic}" + (f"\n(both +{variant})" if variant else "")


def strategy_patch(strategy: str, label: str | None = None) -> Any:
    """A legend handle for a bar of ``strategy``: its colour and hatch."""
    return Patch(facecolor=color(strategy), hatch=hatch(strategy), edgecolor="white", linewidth=0,
                 label=strategy if label is None else label)  # fmt: skip


def frame_label(text: Any, strategy: str) -> None:
    """Frame a text artist naming ``strategy`` (an axis or tick label) in the strategy's colour (dashed
    for the ``////`` variants, dotted for the ``....`` ones), for figures whose colours encode
    something else (the timelines' phases)."""
    text.set_bbox({"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": color(strategy),
                   "linewidth": 1.4, "linestyle": FRAME_LINESTYLES[hatch(strategy)]})  # fmt: skip


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
        "hatch.color": "white",  # hatches drawn over the strategy's colour
        "hatch.linewidth": 0.6,
    })  # fmt: skip


def save(fig: Any, stem: Path, formats: tuple[str, ...] = ("png", "pdf"), **options: Any) -> list[Path]:
    """Save ``stem``.png and ``stem``.pdf (or the ``formats`` given) without time stamps or version
    strings (same data, same bytes); close the figure. ``options`` go to ``savefig``."""
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None}}
    files = [stem.with_name(f"{stem.name}.{kind}") for kind in formats]  # stems may hold dots (yahoo.com)
    for path, kind in zip(files, formats, strict=True):
        fig.savefig(path, metadata=metadata[kind], **options)
    plt.close(fig)
    hand_to_invoking_user(*files)
    return files
