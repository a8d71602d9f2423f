"""Experiment 2 cells: page load times per (site, strategy) and RobE's improvement per site.

``summarise(runs, site_order)`` turns the typed ``runs.csv`` DataFrame (``analysis.schema``) into one
row per (site, strategy): loads, successful loads, mean load time with its 95 % bootstrap CI,
median, objects and replay misses. ``improvements(runs, cells)`` compares each (classic, RobE)
pair at each site: the ratio of the mean load times (the paper's "loading time improvement" is
ratio - 1) with the percentile-bootstrap CI of that ratio, both samples resampled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.stats import bootstrap_mean_ci, bootstrap_ratio_ci
from analysis.style import ordered

#: (classic, RobE) pairs compared, when both were run.
PAIRS = (
    ("mptcp", "robe-sim"),
    ("mptcp-user", "robe-downgrade"),
    ("mptcp-user+kernel-default", "robe-downgrade+kernel-default"),
)
#: The paper's range of improvements ("between 50 % and 100 % in most cases").
PAPER_IMPROVEMENT_PCT = (50.0, 100.0)


def site_order(runs: pd.DataFrame, preferred: list[str] | None = None) -> list[str]:
    """Sites in the profile's order, then any others in order of appearance."""
    present = list(dict.fromkeys(runs["site"]))
    preferred = preferred or []
    return [s for s in preferred if s in present] + [s for s in present if s not in preferred]


def summarise(runs: pd.DataFrame, sites: list[str] | None = None) -> pd.DataFrame:
    """One row per (site, strategy), sites in ``sites`` order, strategies in the style table's order."""
    sites = site_order(runs, sites)
    rows: list[dict[str, Any]] = []
    for (site, strategy), loads in runs.groupby(["site", "strategy"], sort=False):
        ok = loads[loads["status"] == "ok"]
        times = ok["load_ms"].to_numpy(dtype=float)
        mean, low, high = bootstrap_mean_ci(times) if times.size else (math.nan,) * 3
        rows.append({
            "site": str(site), "strategy": str(strategy), "loads": len(loads), "ok": len(ok),
            "mean_ms": mean, "ci_low_ms": low, "ci_high_ms": high,
            "median_ms": float(np.median(times)) if times.size else math.nan,
            "objects": int(loads["objects_fetched"].max()) if loads["objects_fetched"].notna().any() else 0,
            "connections": float(ok["connections"].median()) if len(ok) else math.nan,
            "misses": int(loads["replay_misses"].fillna(0).sum()),
        })  # fmt: skip
    cells = pd.DataFrame(rows)
    if cells.empty:
        return cells
    strategies = ordered(cells["strategy"])
    cells["_site"] = cells["site"].map(sites.index)
    cells["_strategy"] = cells["strategy"].map(strategies.index)
    return cells.sort_values(["_site", "_strategy"]).drop(columns=["_site", "_strategy"]).reset_index(drop=True)


def improvements(runs: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per site and (classic, RobE) pair run: mean classic / mean RobE with its bootstrap CI."""
    ok = runs[runs["status"] == "ok"]
    rows: list[dict[str, Any]] = []
    by_key = cells.set_index(["site", "strategy"]) if not cells.empty else cells
    for site in dict.fromkeys(cells["site"]) if not cells.empty else []:
        for classic, robe in PAIRS:
            if (site, classic) not in by_key.index or (site, robe) not in by_key.index:
                continue
            c = ok[(ok["site"] == site) & (ok["strategy"] == classic)]["load_ms"].to_numpy(dtype=float)
            r = ok[(ok["site"] == site) & (ok["strategy"] == robe)]["load_ms"].to_numpy(dtype=float)
            if not c.size or not r.size:
                continue
            ratio, low, high = bootstrap_ratio_ci(c, r)
            classic_cell, robe_cell = by_key.loc[(site, classic)], by_key.loc[(site, robe)]
            rows.append({
                "site": site, "classic": classic, "robe": robe, "pair": f"{robe} vs {classic}",
                "n_classic": c.size, "n_robe": r.size,
                "classic_ms": float(c.mean()), "robe_ms": float(r.mean()),
                "ratio": ratio, "ratio_ci_low": low, "ratio_ci_high": high,
                "improvement_pct": 100 * (ratio - 1), "improvement_ci_low_pct": 100 * (low - 1),
                "improvement_ci_high_pct": 100 * (high - 1),
                "robe_faster": bool(low > 1),
                "cis_apart": bool(robe_cell["ci_high_ms"] < classic_cell["ci_low_ms"]),
            })  # fmt: skip
    return pd.DataFrame(rows)
