"""Figure 9 of the paper from a stored experiment 2 folder: page load time per site and strategy, and
RobE's improvement beside the paper's 50-100 %.

``render(folder)`` reads ``runs.csv`` (through ``analysis.schema``) and ``metadata.json`` and writes
``summary.csv``, ``improvements.csv``, ``report.md`` and two figures in seaborn's paper style:
``figure9.png``/``.pdf`` one column wide (3.3 in; the two panels stacked) and
``figure9-wide.png``/``.pdf`` two columns wide (7 in; side by side). Left/top: mean load time per
site and strategy (bars) with its 95 % bootstrap CI. Right/bottom: the improvement of each
(classic, RobE) pair, mean classic / mean RobE - 1, with the 95 % bootstrap CI of that ratio,
against the paper's band. The number of loads behind each bar is in the axis label (or on the bar
when it differs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.experiment2_cells import PAPER_IMPROVEMENT_PCT, improvements, summarise
from analysis.ownership import hand_to_invoking_user
from analysis.report2 import write_report
from analysis.schema import EXPERIMENT2
from analysis.style import (
    ONE_COLUMN_IN,
    TWO_COLUMN_IN,
    apply_theme,
    color,
    hatch,
    legend_name,
    marker,
    ordered,
    pair_name,
    save,
    strategy_patch,
)

BAR_IN = 0.055  # height per bar in the bar panel (a site has one bar per strategy, at least four bars' room)


def _bars(ax: Any, cells: pd.DataFrame, sites: list[str], strategies: list[str]) -> None:
    shown = cells[cells["ok"] > 0].assign(mean_s=lambda d: d["mean_ms"] / 1000)
    sns.barplot(data=shown, y="site", x="mean_s", hue="strategy", order=sites, hue_order=strategies,
                palette={s: color(s) for s in strategies}, errorbar=None, orient="h", ax=ax, legend=False,
                width=0.8, linewidth=0, saturation=1.0)  # fmt: skip
    by_key = shown.set_index(["site", "strategy"])
    uniform = shown["ok"].nunique() == 1
    for strategy, container in zip(strategies, ax.containers, strict=False):
        for patch in container:
            patch.set_hatch(hatch(strategy))
            site = sites[round(patch.get_y() + patch.get_height() / 2)]
            if (site, strategy) not in by_key.index:
                continue
            cell = by_key.loc[(site, strategy)]
            y = patch.get_y() + patch.get_height() / 2
            ax.errorbar(cell["mean_s"], y, xerr=[[cell["mean_s"] - cell["ci_low_ms"] / 1000],
                                                  [cell["ci_high_ms"] / 1000 - cell["mean_s"]]],
                        color="0.15", elinewidth=0.6, capsize=1.2, capthick=0.6, linestyle="none")  # fmt: skip
            if not uniform:
                ax.annotate(f"n={int(cell['ok'])}", (cell["ci_high_ms"] / 1000, y), xytext=(2, 0),
                            textcoords="offset points", va="center", fontsize=5)  # fmt: skip
    n = f"mean of n = {int(shown['ok'].iloc[0])} loads, 95 % CI" if uniform and not shown.empty else "mean, 95 % CI"
    ax.set_xlabel(f"page load time [s]\n({n})")
    ax.set_ylabel("")
    ax.grid(axis="y", visible=False)


def _gains(ax: Any, gains: pd.DataFrame, sites: list[str]) -> None:
    ax.axvspan(*PAPER_IMPROVEMENT_PCT, color="0.85", linewidth=0, zorder=0)
    ax.axvline(0, color="0.3", linewidth=0.6, zorder=1)
    pairs = list(dict.fromkeys(gains["pair"])) if not gains.empty else []
    for k, pair in enumerate(pairs):
        mine = gains[gains["pair"] == pair]
        offset = (k - (len(pairs) - 1) / 2) * 0.3
        y = mine["site"].map(sites.index) + offset
        robe = str(mine["robe"].iloc[0])
        ax.errorbar(mine["improvement_pct"], y, xerr=[mine["improvement_pct"] - mine["improvement_ci_low_pct"],
                                                      mine["improvement_ci_high_pct"] - mine["improvement_pct"]],
                    color=color(robe), marker=marker(robe), markersize=3.5, linestyle="none", elinewidth=0.8,
                    capsize=1.2, capthick=0.6, label=pair, zorder=3)  # fmt: skip
    ax.set_yticks(range(len(sites)))
    ax.set_yticklabels(sites)
    ax.set_ylim(len(sites) - 0.5, -0.5)
    ax.set_xlabel("RobE improvement [%]\n(mean classic / mean RobE − 1, 95 % CI)")
    ax.grid(axis="y", visible=False)


def plot(cells: pd.DataFrame, gains: pd.DataFrame, width_in: float, stem: Path) -> list[Path]:
    """Draw Figure 9 ``width_in`` wide (stacked when narrow, side by side when wide); save PNG and PDF."""
    apply_theme()
    sites = list(dict.fromkeys(cells["site"]))
    strategies = ordered(cells["strategy"])
    wide = width_in >= 4
    bars_in = max(1.0, BAR_IN * len(sites) * max(len(strategies), 4) + 0.3)
    gains_in = max(0.8, 0.16 * len(sites) + 0.5)
    pairs = gains["pair"].nunique() if not gains.empty else 0
    # The legend below: about 0.25 in per row of two-line entries (strategies, pairs, the paper's band).
    legend_in = 0.25 * math.ceil((len(strategies) + pairs + 1) / (4 if wide else 2))
    if wide:
        fig, (top, bottom) = plt.subplots(1, 2, figsize=(width_in, bars_in + 0.9 + legend_in), layout="constrained",
                                          gridspec_kw={"width_ratios": [3, 2]}, sharey=False)  # fmt: skip
    else:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(width_in, bars_in + gains_in + 1.0 + legend_in),
                                          layout="constrained",
                                          gridspec_kw={"height_ratios": [bars_in, gains_in]})  # fmt: skip
    _bars(top, cells, sites, strategies)
    _gains(bottom, gains, sites)
    if wide:
        bottom.set_yticklabels([])
    handles: list[Any] = [strategy_patch(s, legend_name(s)) for s in strategies]
    if not gains.empty:
        for classic, robe in dict.fromkeys(zip(gains["classic"], gains["robe"], strict=True)):
            handles.append(Line2D([], [], color=color(robe), marker=marker(robe), markersize=3.5, linestyle="none",
                                  label=pair_name(classic, robe)))  # fmt: skip
    handles.append(Patch(color="0.85", label=f"paper: {PAPER_IMPROVEMENT_PCT[0]:.0f}-{PAPER_IMPROVEMENT_PCT[1]:.0f} %"))
    # Column-major: the strategies first, then the pairs and the paper's band.
    fig.legend(handles=handles, loc="outside lower center", ncol=4 if wide else 2, handlelength=1.4,
               columnspacing=1.0, labelspacing=0.6)  # fmt: skip
    return save(fig, stem)


def load(folder: Path) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(runs, metadata, cells, improvements) of one experiment 2 folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    runs = EXPERIMENT2.read(folder / "runs.csv")
    cells = summarise(runs, list(metadata.get("profile", {}).get("sites", [])))
    return runs, metadata, cells, improvements(runs, cells)


def render(folder: Path) -> list[Path]:
    """Regenerate Figure 9 (one- and two-column), summary.csv, improvements.csv and report.md."""
    runs, metadata, cells, gains = load(folder)
    files = [*plot(cells, gains, ONE_COLUMN_IN, folder / "figure9"),
             *plot(cells, gains, TWO_COLUMN_IN, folder / "figure9-wide")]  # fmt: skip
    for name, table in (("summary.csv", cells), ("improvements.csv", gains)):
        table.to_csv(folder / name, index=False)
        hand_to_invoking_user(folder / name)
        files.append(folder / name)
    return [*files, write_report(folder, runs, metadata, cells, gains)]
