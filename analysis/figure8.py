"""Figure 8 from stored experiment 1 results: set-up time against loss on the default path.

``render(folder)`` reads ``runs.csv`` (through ``analysis.schema``) and ``metadata.json`` and writes
``summary.csv`` and two figures beside them, both in seaborn's paper style:

- ``figure8.png``/``.pdf``, one column wide (3.3 in): the paper's metric, connect() -> accept()
  (``metric="request"`` draws connect() -> request at the server instead);
- ``figure8-wide.png``/``.pdf``, two columns wide (7 in): both metrics side by side.

Per metric, one panel per strategy family (kernel sockets, userspace transport) as small
multiples: the mean of the successful attempts (line, filled markers) with its 95 % bootstrap CI
(band), the median (hollow markers) and the analytic model's mean (dashed); a log time axis. The
bottom panel holds the share of failed attempts with its 95 % Clopper–Pearson interval and the
model's (dashed). Strategies are dodged slightly along the loss axis so that equal values stay
visible. The number of attempts behind each point is in ``report.md``.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from analysis.experiment1_cells import DEFAULT_METRIC, METRIC_LABELS, METRICS, summarise
from analysis.ownership import hand_to_invoking_user
from analysis.schema import EXPERIMENT1
from analysis.style import FAMILIES, ONE_COLUMN_IN, TWO_COLUMN_IN, apply_theme, color, ordered, save, style

FAMILY_TITLES = {"kernel": "kernel sockets", "userspace": "userspace transport", "other": "other"}
TIME_PANEL_IN = 1.75
FAILURE_PANEL_IN = 1.0


def _dodge(strategies: list[str], loss_levels: list[float]) -> dict[str, float]:
    """Horizontal offsets (in loss %) that keep the strategies' points apart."""
    spacing = min((b - a for a, b in itertools.pairwise(loss_levels)), default=10.0)
    width = 0.12 * spacing
    count = len(strategies)
    return {s: (i - (count - 1) / 2) * width / max(count - 1, 1) for i, s in enumerate(strategies)}


def _time_panel(ax: Any, cells: pd.DataFrame, strategies: list[str], dodge: dict[str, float]) -> None:
    for strategy in strategies:
        mine = cells[(cells["strategy"] == strategy) & cells["ok"].gt(0)].copy()
        if mine.empty:
            continue
        mine["x"] = mine["loss_pct"] + dodge[strategy]
        look = style(strategy)
        c = color(strategy)
        sns.lineplot(data=mine, x="x", y="mean_ms", ax=ax, color=c, marker=look.marker, markeredgewidth=0,
                     errorbar=None, legend=False, zorder=3)  # fmt: skip
        banded = mine.dropna(subset=["ci_low_ms", "ci_high_ms"])
        ax.fill_between(banded["x"], banded["ci_low_ms"], banded["ci_high_ms"], color=c, alpha=0.15, linewidth=0)
        ax.scatter(mine["x"], mine["median_ms"], marker=look.marker, facecolors="none", edgecolors=[c],
                   linewidths=0.7, s=14, zorder=4)  # fmt: skip
        modeled = cells[(cells["strategy"] == strategy)].dropna(subset=["model_mean_ms"])
        if not modeled.empty:
            ax.plot(modeled["loss_pct"], modeled["model_mean_ms"], color=c, linestyle=(0, (3, 2)), linewidth=0.9,
                    alpha=0.9, zorder=2)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("")


def _failure_panel(ax: Any, cells: pd.DataFrame, strategies: list[str], dodge: dict[str, float]) -> None:
    # The 95 % Clopper-Pearson intervals are in summary.csv and report.md; drawn, they hide the lines.
    for strategy in strategies:
        mine = cells[cells["strategy"] == strategy]
        c = color(strategy)
        ax.plot(mine["loss_pct"] + dodge[strategy], 100 * mine["failed_share"], color=c,
                marker=style(strategy).marker, markersize=3.5, markeredgewidth=0, linewidth=1.0, zorder=3)  # fmt: skip
        modeled = mine.dropna(subset=["model_success"])
        if not modeled.empty:
            ax.plot(modeled["loss_pct"], 100 * (1 - modeled["model_success"]), color=c, linestyle=(0, (3, 2)),
                    linewidth=0.9, zorder=2)  # fmt: skip
    ax.set_ylim(-5, 105)
    ax.set_yticks([0, 50, 100])
    ax.set_ylabel("failed [%]")
    ax.set_xlabel("packet loss on the default path [%]")


def _legend(fig: Any, strategies: list[str], ncol: int) -> None:
    handles = [Line2D([], [], color=color(s), marker=style(s).marker, markeredgewidth=0, label=s) for s in strategies]
    grey = "0.35"
    handles += [
        Line2D([], [], color=grey, marker="o", markeredgewidth=0, label="mean, 95 % CI"),
        Line2D([], [], color=grey, marker="o", linestyle="none", markerfacecolor="none", markeredgewidth=0.7,
               label="median"),
        Line2D([], [], color=grey, linestyle=(0, (3, 2)), label="model"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, handlelength=1.8, columnspacing=1.0,
               handletextpad=0.4)  # fmt: skip


def plot(cells: pd.DataFrame, metrics: list[str], width_in: float, stem: Path) -> list[Path]:
    """Draw Figure 8 for ``metrics`` (one column each) ``width_in`` wide; save PNG and PDF."""
    apply_theme()
    strategies = ordered(cells["strategy"])
    families = [f for f in FAMILIES if any(style(s).family == f for s in strategies)]
    loss_levels = sorted(cells["loss_pct"].unique())
    dodge = _dodge(strategies, loss_levels)
    ncol_legend = 7 if width_in >= 4 else (4 if len(strategies) <= 4 else 3)
    legend_rows = math.ceil((len(strategies) + 3) / ncol_legend)
    heights = [TIME_PANEL_IN] * len(families) + [FAILURE_PANEL_IN]
    fig, axes = plt.subplots(len(heights), len(metrics), figsize=(width_in, sum(heights) + 0.3 + 0.14 * legend_rows),
                             sharex=True, squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    for col, metric in enumerate(metrics):
        mine = cells[cells["metric"] == metric]
        for row, fam in enumerate(families):
            ax = axes[row][col]
            _time_panel(ax, mine, [s for s in strategies if style(s).family == fam], dodge)
            ax.set_ylabel("set-up time [ms]" if col == 0 else "")
            title = [METRIC_LABELS[metric]] if row == 0 else []
            if len(families) > 1:
                title.append(FAMILY_TITLES[fam])
            ax.set_title(", ".join(title) if width_in >= 4 or row else "\n".join(title), pad=3)
        _failure_panel(axes[-1][col], mine, strategies, dodge)
        if col:
            axes[-1][col].set_ylabel("")
    for row in range(len(families)):  # one time scale per family row, shared by the metrics
        low = min(a.get_ylim()[0] for a in axes[row])
        high = max(a.get_ylim()[1] for a in axes[row])
        for ax in axes[row]:
            if high < 10 * low:  # less than a decade: a log axis would only show minor ticks
                ax.set_yscale("linear")
            ax.set_ylim(low, high)
    for ax in axes[-1]:
        ax.set_xticks(loss_levels if len(loss_levels) <= 6 else loss_levels[::2])
        if len(loss_levels) == 1:
            ax.set_xlim(loss_levels[0] - 10, loss_levels[0] + 10)
    _legend(fig, strategies, ncol_legend)
    return save(fig, stem)


def write_summary(cells: pd.DataFrame, path: Path) -> Path:
    """summary.csv: every plotted number, one row per (strategy, loss, metric)."""
    cells.to_csv(path, index=False)
    hand_to_invoking_user(path)
    return path


def load(folder: Path) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """(runs, metadata, cells) of one experiment 1 result folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    runs = EXPERIMENT1.read(folder / "runs.csv")
    return runs, metadata, summarise(runs, metadata)


def render(folder: Path, metric: str = DEFAULT_METRIC, cells: pd.DataFrame | None = None) -> list[Path]:
    """Regenerate Figure 8 (one- and two-column) and summary.csv in one result folder."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: must be one of {', '.join(METRICS)}")
    if cells is None:
        cells = load(folder)[2]
    stem = folder / ("figure8" if metric == DEFAULT_METRIC else f"figure8-{metric}")
    files = plot(cells, [metric], ONE_COLUMN_IN, stem)
    files += plot(cells, [DEFAULT_METRIC, *[m for m in METRICS if m != DEFAULT_METRIC]], TWO_COLUMN_IN,
                  folder / "figure8-wide")  # fmt: skip
    return [*files, write_summary(cells, folder / "summary.csv")]
