"""Where a page load's time goes: waterfalls of representative loads and stacked bars per site.

Reads ``runs.csv`` and ``connections.csv`` of an experiment 2 folder (``experiments.timeline``
describes the columns; every time is in ms from wget's start). Per connection the phases are:

* ``dns``: the lookup of its host (the first connection to a host only);
* ``set-up``: client proxy accept -> the multipath connection to the HAAP established;
* ``TLS``: established -> the origin finished its TLS handshake (HTTPS only; includes the HAAP's
  connection to the origin);
* ``exchange``: from there to the last response byte at the client proxy (requests, responses);
* ``tail``: last byte -> wget ended the connection (wget keeps it open until it has opened the
  next one; in the stacked bars only the last connection's tail counts).

``waterfall_<site>.png``: for each strategy, the load whose time is the cell's median, one bar per
connection. ``where_time_goes.png``: per site, the mean over loads of each phase summed over the
load's connections, and the rest of the load time (``wget``: parsing and waiting between
connections, which wget does one at a time). ``python -m analysis.timelines FOLDER``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.artist import Artist
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from analysis.schema import EXPERIMENT2, read_connections, read_runs
from analysis.style import apply_theme, frame_label, ordered, save
from analysis.tables import per_folder_main

PHASES = ["dns", "set-up", "TLS", "exchange", "tail"]
#: Paul Tol's "light" scheme (colour-blind safe): pale tones, so that no phase is mistaken for a
#: strategy of the other figures (their saturated colours frame the strategy names here).
COLORS = dict(zip([*PHASES, "wget"], ["#77AADD", "#EE8866", "#EEDD88", "#44BB99", "#FFAABB", "#BBBBBB"], strict=True))


def read_folder(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ok loads and their connections (last row of a run id wins), read through the schema."""
    runs = read_runs(folder, EXPERIMENT2).drop_duplicates("run_id", keep="last")
    runs = runs[runs["status"] == "ok"]
    conns = read_connections(folder).drop_duplicates(["run_id", "conn"], keep="last")
    return runs, conns[conns["run_id"].isin(runs["run_id"])]


def phases(conns: pd.DataFrame) -> pd.DataFrame:
    """Per connection, the start and duration of each phase (ms); missing phases are 0 long."""
    c = conns.copy()
    start = c["accept_ms"]
    ready = c["setup_ms"].fillna(start)
    secure = c["tls_done_ms"].where((c["scheme"] == "https").fillna(False)).fillna(ready).clip(lower=ready)
    last = c["last_byte_ms"].fillna(c["last_response_ms"]).fillna(secure).clip(lower=secure)
    end = c["client_end_ms"].fillna(c["closed_ms"]).fillna(last).clip(lower=last)
    out = pd.DataFrame({"run_id": c["run_id"], "site": c["site"], "strategy": c["strategy"], "conn": c["conn"]})
    out["dns_start"], out["dns"] = c["dns_start_ms"].fillna(start), c["dns_ms"].fillna(0.0)
    for name, a, b in (("set-up", start, ready), ("TLS", ready, secure), ("exchange", secure, last),
                       ("tail", last, end)):  # fmt: skip
        out[f"{name}_start"], out[name] = a, (b - a).clip(lower=0)
    out["join"] = c["join_ms"]
    return out


def representative(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (site, strategy), the load whose load time is closest to the cell's median."""
    runs = runs.assign(gap=(runs["load_ms"] - runs.groupby(["site", "strategy"])["load_ms"].transform("median")).abs())
    return runs.sort_values("gap").groupby(["site", "strategy"]).head(1)


def where_time_goes(runs: pd.DataFrame, conns: pd.DataFrame) -> pd.DataFrame:
    """Mean over loads, per site and strategy, of each phase summed per load, plus the rest."""
    parts = phases(conns)
    # wget keeps a finished connection open until it has opened the next one: only the last
    # connection's tail delays the load.
    ends = parts["tail_start"] + parts["tail"]
    parts.loc[ends < ends.groupby(parts["run_id"]).transform("max"), "tail"] = 0.0
    per_load = parts.groupby("run_id")[PHASES].sum()
    table = runs.set_index("run_id")[["site", "strategy", "load_ms"]].join(per_load)
    table["wget"] = (table["load_ms"] - table[PHASES].sum(axis=1)).clip(lower=0)
    return table.groupby(["site", "strategy"])[[*PHASES, "wget"]].mean()


def plot_waterfall(site: str, runs: pd.DataFrame, conns: pd.DataFrame, out: Path) -> Path:
    """One figure for ``site``: a panel per strategy, a bar per connection of its median load."""
    chosen = representative(runs[runs["site"] == site])
    strategies = ordered(chosen["strategy"])
    parts = phases(conns[conns["run_id"].isin(chosen["run_id"])])
    rows = max(parts.groupby("run_id").size().max(), 1)
    fig, axes = plt.subplots(len(strategies), 1, figsize=(10, 1.0 + len(strategies) * (0.35 + 0.22 * rows)),
                             sharex=True, squeeze=False)  # fmt: skip
    for ax, strategy in zip(axes[:, 0], strategies, strict=True):
        load = chosen[chosen["strategy"] == strategy].iloc[0]
        mine = parts[parts["run_id"] == load["run_id"]].sort_values("conn")
        for y, (_, conn) in enumerate(mine.iterrows()):
            ax.barh(y, conn["dns"], left=conn["dns_start"], color=COLORS["dns"], height=0.7)
            for name in PHASES[1:]:
                ax.barh(y, conn[name], left=conn[f"{name}_start"], color=COLORS[name], height=0.7)
            if pd.notna(conn["join"]):
                ax.plot(conn["join"], y, marker="|", color="black", markersize=9)
        ax.set_yticks(range(len(mine)), [f"c{int(c)}" for c in mine["conn"]], fontsize=7)
        ax.invert_yaxis()
        label = ax.set_ylabel(f"{strategy}\n{load['load_ms']:.0f} ms", rotation=0, ha="right", va="center",
                              fontsize=8, labelpad=8)  # fmt: skip
        frame_label(label, strategy)
    handles: list[Artist] = [Rectangle((0, 0), 1, 1, color=COLORS[p]) for p in PHASES]
    handles.append(Line2D([], [], marker="|", color="black", linestyle="", markersize=9))
    axes[0, 0].legend(handles, [*PHASES, "second subflow up"], ncol=6, fontsize=7, loc="lower left",
                      bbox_to_anchor=(0, 1.02))  # fmt: skip
    axes[-1, 0].set_xlabel("ms since the client started (wget, or the browser driver)")
    fig.suptitle(f"{site}: connections of the median load per strategy", y=1.0, fontsize=10)
    fig.tight_layout()
    return save(fig, out / f"waterfall_{site}", ("png",), dpi=110, bbox_inches="tight")[0]


def plot_where_time_goes(table: pd.DataFrame, out: Path) -> Path:
    """Stacked bars: per site (panel) and strategy (bar), the mean time of each phase."""
    sites = sorted(table.index.get_level_values("site").unique())
    cols = 3
    rows = (len(sites) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.2 + 0.25 * len(table) / len(sites) * rows),
                             squeeze=False)  # fmt: skip
    for ax, site in zip(axes.flat, sites, strict=False):
        part = table.loc[site]
        part = part.loc[ordered(part.index)]
        left = pd.Series(0.0, index=part.index)
        for phase in [*PHASES, "wget"]:
            ax.barh(part.index, part[phase], left=left, color=COLORS[phase], label=phase)
            left += part[phase]
        ax.set_title(site, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="y", pad=5)
        for text in ax.get_yticklabels():
            frame_label(text, text.get_text())
        ax.invert_yaxis()
    for ax in axes.flat[len(sites) :]:
        ax.set_visible(False)
    fig.supxlabel("mean time per load [ms] (phases summed over the load's connections)", fontsize=9)
    fig.tight_layout()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=6, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))  # above all panels
    return save(fig, out / "where_time_goes", ("png",), dpi=110, bbox_inches="tight")[0]


def write_figures(folder: Path) -> list[Path]:
    """Every waterfall, the stacked bars and where_time_goes.csv of ``folder``."""
    runs, conns = read_folder(folder)
    apply_theme()
    sns.set_style("whitegrid")  # screen-sized figures: the sizes below, the paper theme's fonts and hatches
    paths = [plot_waterfall(site, runs, conns, folder) for site in sorted(runs["site"].unique())]
    table = where_time_goes(runs, conns)
    table.round(2).to_csv(folder / "where_time_goes.csv")
    paths.append(plot_where_time_goes(table, folder))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one report per folder."""
    return per_folder_main("analysis.timelines", __doc__ or "", write_figures, argv)


if __name__ == "__main__":
    sys.exit(main())
