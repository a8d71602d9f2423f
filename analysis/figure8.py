"""Figure 8 from stored experiment 1 results: set-up time against loss on the default path.

Reads ``runs.csv`` (one row per connection attempt) and ``metadata.json`` of a result folder and
writes ``figure8.png``/``figure8.pdf`` and ``summary.csv`` beside them. Top panel: mean
connect()->request-at-server time of successful runs per strategy with its 95 % confidence band
(Student t), and the analytic expectation (``analysis.model``) as dashed lines with its 95 %
interval for the same number of runs. Bottom panel: share of failed (and censored) attempts.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from analysis import model
from analysis.stats import mean_ci

STYLE = {
    "tcp": ("tab:gray", "s"),
    "mptcp": ("tab:blue", "o"),
    "robe-sim": ("tab:green", "^"),
    "robe-timer": ("tab:orange", "v"),
}


@dataclass(frozen=True)
class Point:
    """Summary of one (strategy, loss) cell."""

    strategy: str
    loss_pct: float
    runs: int
    ok: int
    failed: int
    censored: int
    mean_ms: float
    ci_low_ms: float
    ci_high_ms: float
    median_ms: float
    model_mean_ms: float
    model_low_ms: float
    model_high_ms: float
    model_success: float

    @property
    def failed_share(self) -> float:
        """Failed or censored attempts / all attempts."""
        return (self.failed + self.censored) / self.runs if self.runs else math.nan


def read_runs(folder: Path) -> list[dict[str, str]]:
    """Rows of ``runs.csv``."""
    with (folder / "runs.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def model_for(strategy: str, loss_pct: float, profile: dict[str, Any], n: int) -> tuple[float, float, float, float]:
    """(mean, low, high, success) of the analytic expectation in ms for ``n`` successful runs."""
    rtt1 = profile["path1"]["rtt_ms"] / 1000
    rtt2 = profile["path2"]["rtt_ms"] / 1000
    loss = loss_pct / 100
    if strategy in ("tcp", "mptcp"):
        expect = model.single_path(rtt1, loss)
    elif strategy == "robe-sim":
        expect = model.robe_sim([rtt1, rtt2], [loss < 1, True])
    elif loss >= 1:
        expect = model.robe_timer_dead_default(profile["timer_s"], rtt2)
    elif loss == 0:
        expect = model.single_path(rtt1, 0.0)
    else:
        return (math.nan, math.nan, math.nan, math.nan)
    low, high = expect.interval(max(n, 1))
    if expect.sd_s == 0:
        low = high = expect.mean_s
    return (1000 * expect.mean_s, 1000 * low, 1000 * high, expect.success)


def summarise(rows: list[dict[str, str]], profile: dict[str, Any]) -> list[Point]:
    """One Point per (strategy, loss) cell."""
    cells: dict[tuple[str, float], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        cells[(row["strategy"], float(row["loss_pct"]))].append(row)
    points = []
    for (strategy, loss), members in sorted(cells.items()):
        times = [float(r["setup_ms"]) for r in members if r["status"] == "ok" and r["setup_ms"]]
        mean, low, high = mean_ci(times) if len(times) >= 2 else (times[0] if times else math.nan,) * 3
        median = sorted(times)[len(times) // 2] if times else math.nan
        m_mean, m_low, m_high, m_success = model_for(strategy, loss, profile, len(times))
        points.append(Point(
            strategy, loss, len(members), len(times),
            sum(r["status"] == "failed" for r in members), sum(r["status"] == "censored" for r in members),
            mean, low, high, median, m_mean, m_low, m_high, m_success,
        ))  # fmt: skip
    return points


def write_summary(points: list[Point], path: Path) -> None:
    """summary.csv: the plotted numbers."""
    names = [*Point.__dataclass_fields__, "failed_share"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for p in points:
            writer.writerow([getattr(p, n) for n in names])


def plot(points: list[Point], metadata: dict[str, Any], out_stem: Path) -> list[Path]:
    """Draw Figure 8 and save PNG and PDF; return the files."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    strategies = sorted({p.strategy for p in points}, key=lambda s: list(STYLE).index(s) if s in STYLE else 99)
    for strategy in strategies:
        color, marker = STYLE.get(strategy, ("black", "x"))
        mine = [p for p in points if p.strategy == strategy]
        xs = [p.loss_pct for p in mine if not math.isnan(p.mean_ms)]
        ys = [p.mean_ms for p in mine if not math.isnan(p.mean_ms)]
        top.plot(xs, ys, marker=marker, color=color, label=f"{strategy} (measured mean)")
        top.fill_between(xs, [p.ci_low_ms for p in mine if not math.isnan(p.mean_ms)],
                         [p.ci_high_ms for p in mine if not math.isnan(p.mean_ms)], color=color, alpha=0.2)  # fmt: skip
        modeled = [p for p in mine if not math.isnan(p.model_mean_ms)]
        if modeled:
            top.plot([p.loss_pct for p in modeled], [p.model_mean_ms for p in modeled], linestyle="--",
                     color=color, alpha=0.8, label=f"{strategy} (model)")  # fmt: skip
        bottom.plot([p.loss_pct for p in mine], [100 * p.failed_share for p in mine], marker=marker, color=color)
    top.set_yscale("log")
    top.set_ylabel("connect() → request at server [ms]\n(mean of successful runs, 95 % CI)")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=7, ncol=2)
    profile = metadata.get("profile", {})
    top.set_title(
        f"Experiment 1 ({profile.get('name', '?')}): RTT {profile.get('path1', {}).get('rtt_ms')} / "
        f"{profile.get('path2', {}).get('rtt_ms')} ms, loss on path 1 ({profile.get('loss_direction')}), "
        f"backend {metadata.get('link_backend', {}).get('backend', '?')}",
        fontsize=9,
    )
    bottom.set_xlabel("packet loss on the default path [%]")
    bottom.set_ylabel("failed [%]")
    bottom.set_ylim(-5, 105)
    bottom.grid(True, alpha=0.3)
    fig.tight_layout()
    files = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    for file in files:
        fig.savefig(file, dpi=150)
    plt.close(fig)
    return files


def render(folder: Path) -> list[Path]:
    """Regenerate Figure 8 and summary.csv in one result folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    points = summarise(read_runs(folder), metadata["profile"])
    write_summary(points, folder / "summary.csv")
    return [*plot(points, metadata, folder / "figure8"), folder / "summary.csv"]
