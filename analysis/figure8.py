"""Figure 8 from stored experiment 1 results: set-up time against loss on the default path.

Reads ``runs.csv`` (one row per connection attempt) and ``metadata.json`` of a result folder and
writes ``figure8.png``/``figure8.pdf`` and ``summary.csv`` beside them. Top panel: mean
connect()->request-at-server time of successful runs per strategy with its 95 % confidence band
(percentile bootstrap), and the analytic expectation (``analysis.model``) as dashed lines with its 95 %
interval for the same number of runs. Bottom panel: share of failed (and censored) attempts.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from analysis import model
from analysis.stats import bootstrap_mean_ci

STYLE = {
    "tcp": ("tab:gray", "s"),
    "mptcp": ("tab:blue", "o"),
    "robe-sim": ("tab:green", "^"),
    "robe-timer": ("tab:orange", "v"),
    "mptcp-user": ("tab:purple", "D"),
    "robe-downgrade": ("tab:red", "P"),
    "robe-bbm": ("tab:brown", "X"),
    "robe-esim": ("tab:pink", "*"),
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
    path2_win_share: float
    losers_accepted: int
    fallbacks: int

    @property
    def failed_share(self) -> float:
        """Failed or censored attempts / all attempts."""
        return (self.failed + self.censored) / self.runs if self.runs else math.nan


def read_runs(folder: Path) -> list[dict[str, str]]:
    """Rows of ``runs.csv``."""
    with (folder / "runs.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass(frozen=True)
class ModelSettings:
    """What the analytic model needs to know about a result folder's kernel and profile."""

    rtt1_s: float
    rtt2_s: float
    timer_s: float
    syn_retries: int
    applicable: bool  # False: loss not on the client's egress only, or linear SYN timeouts
    reason: str = ""


def model_settings(metadata: dict[str, Any]) -> ModelSettings:
    """Read RTTs, the timer and the client's SYN settings from a folder's metadata."""
    profile = metadata["profile"]
    client = metadata.get("network", {}).get("sysctls", {}).get("client", {})
    syn_retries = int(profile.get("tcp_syn_retries") or client.get("net.ipv4.tcp_syn_retries", model.TCP_SYN_RETRIES))
    linear = client.get("net.ipv4.tcp_syn_linear_timeouts", "0")
    applicable, reason = True, ""
    if profile.get("loss_direction", "up") != "up":
        applicable, reason = False, "model covers loss on the client's egress (loss_direction = up) only"
    elif str(linear) != "0":
        applicable, reason = False, f"model assumes exponential SYN back-off; tcp_syn_linear_timeouts = {linear}"
    return ModelSettings(
        profile["path1"]["rtt_ms"] / 1000, profile["path2"]["rtt_ms"] / 1000, profile["timer_s"], syn_retries,
        applicable, reason,
    )  # fmt: skip


def expectation(strategy: str, loss_pct: float, settings: ModelSettings) -> model.Expectation | None:
    """The analytic expectation of one (strategy, loss) cell, or None where no model applies."""
    if not settings.applicable:
        return None
    loss = loss_pct / 100
    if strategy in ("tcp", "mptcp", "mptcp-user"):
        return model.single_path(settings.rtt1_s, loss, syn_retries=settings.syn_retries)
    if strategy in ("robe-sim", "robe-timer", "robe-downgrade", "robe-bbm", "robe-esim"):
        start2 = settings.timer_s if strategy == "robe-timer" else 0.0
        return model.two_path_race(settings.rtt1_s, loss, settings.rtt2_s, start2, syn_retries=settings.syn_retries)
    return None


def model_for(strategy: str, loss_pct: float, settings: ModelSettings, n: int) -> tuple[float, float, float, float]:
    """(mean, low, high, success) of the analytic expectation in ms for ``n`` successful runs."""
    expect = expectation(strategy, loss_pct, settings)
    if expect is None:
        return (math.nan, math.nan, math.nan, math.nan)
    low, high = expect.interval(max(n, 1))
    if expect.sd_s == 0:
        low = high = expect.mean_s
    return (1000 * expect.mean_s, 1000 * low, 1000 * high, expect.success)


def summarise(rows: list[dict[str, str]], metadata: dict[str, Any]) -> list[Point]:
    """One Point per (strategy, loss) cell; ``error`` rows (broken attempts, rerun on resume) are left out."""
    settings = model_settings(metadata)
    cells: dict[tuple[str, float], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["status"] in ("ok", "failed", "censored"):
            cells[(row["strategy"], float(row["loss_pct"]))].append(row)
    points = []
    for (strategy, loss), members in sorted(cells.items()):
        ok = [r for r in members if r["status"] == "ok" and r["setup_ms"]]
        times = [float(r["setup_ms"]) for r in ok]
        mean, low, high = bootstrap_mean_ci(times) if times else (math.nan,) * 3
        median = statistics.median(times) if times else math.nan
        m_mean, m_low, m_high, m_success = model_for(strategy, loss, settings, len(times))
        path2_wins = sum(r["winner_path"] == "2" for r in ok) / len(ok) if ok else math.nan
        points.append(Point(
            strategy, loss, len(members), len(times),
            sum(r["status"] == "failed" for r in members), sum(r["status"] == "censored" for r in members),
            mean, low, high, median, m_mean, m_low, m_high, m_success,
            path2_wins, sum(int(r["losers_accepted"] or 0) for r in members),
            sum(r["fallback_tcp"] == "1" for r in members),
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
        lows = [p.ci_low_ms for p in mine if not math.isnan(p.mean_ms)]
        top.fill_between(xs, lows, [p.ci_high_ms for p in mine if not math.isnan(p.mean_ms)], color=color,
                         alpha=0.15)  # fmt: skip
        modeled = [p for p in mine if not math.isnan(p.model_mean_ms)]
        if modeled:
            top.plot([p.loss_pct for p in modeled], [p.model_mean_ms for p in modeled], linestyle="--",
                     color=color, alpha=0.8, label=f"{strategy} (model)")  # fmt: skip
        bottom.plot([p.loss_pct for p in mine], [100 * p.failed_share for p in mine], marker=marker, color=color)
        with_model = [p for p in mine if not math.isnan(p.model_success)]
        if with_model:
            bottom.plot([p.loss_pct for p in with_model], [100 * (1 - p.model_success) for p in with_model],
                        linestyle="--", color=color, alpha=0.8)  # fmt: skip
    top.set_yscale("log")
    top.set_ylabel("connect() → request at server [ms]\n(mean of successful runs, 95 % bootstrap CI)")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=7, ncol=2, loc="upper left")
    profile = metadata.get("profile", {})
    top.set_title(
        f"Experiment 1 ({profile.get('name', '?')}): RTT {profile.get('path1', {}).get('rtt_ms')} / "
        f"{profile.get('path2', {}).get('rtt_ms')} ms, loss on path 1 ({profile.get('loss_direction')}), "
        f"backend {metadata.get('link_backend', {}).get('backend', '?')}",
        fontsize=9,
    )
    bottom.set_xlabel("packet loss on the default path [%]")
    bottom.set_ylabel("failed [%]\n(dashed: model)")
    bottom.set_ylim(-5, 105)
    bottom.grid(True, alpha=0.3)
    fig.tight_layout()
    files = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    for file in files:
        # No creation date in the PDF: regenerating a figure from the same results gives the same bytes.
        file_metadata = {"CreationDate": None} if file.suffix == ".pdf" else None
        fig.savefig(file, dpi=150, metadata=file_metadata)
    plt.close(fig)
    return files


def render(folder: Path) -> list[Path]:
    """Regenerate Figure 8 and summary.csv in one result folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    points = summarise(read_runs(folder), metadata)
    write_summary(points, folder / "summary.csv")
    return [*plot(points, metadata, folder / "figure8"), folder / "summary.csv"]
