"""Experiment 1 cells: per (strategy, loss level, metric) the measured statistics and the model's.

``summarise(runs, metadata)`` turns the typed ``runs.csv`` DataFrame (``analysis.schema``) into one
tidy row per cell and metric (``summary.csv``): attempts, successes, failures (with their
Clopper–Pearson interval), mean with its 95 % bootstrap CI, median, and the analytic model's mean
and median with the 95 % intervals in which the mean and the median of that many successful
attempts fall (``analysis.model``), and whether the measurement lies inside them.

Two metrics, both from connect() at the client on the server's clock: ``accept`` (accept()
returned at the server: the paper's Figure 8 metric, column ``accept_ms``) and ``request`` (the
first request bytes arrived, ``setup_ms``: the time until the connection carries data).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis import model
from analysis.schema import FINAL_STATUSES
from analysis.stats import bootstrap_mean_ci, clopper_pearson
from analysis.style import STRATEGIES, family
from robe.strategies import SetupPath, with_setup_path

#: metric -> runs.csv column.
METRICS = {"accept": "accept_ms", "request": "setup_ms"}
METRIC_LABELS = {"accept": "connect() → accept()", "request": "connect() → request at server"}
DEFAULT_METRIC = "accept"
#: The model leaves out processing and emulator overheads (about 0.2 ms per set-up over 1.5 x
#: the measured RTT at 0 % loss, 0.6 ms for the userspace RobE_TIMER); a statistic agrees with the
#: model when it lies within the model's 95 % interval widened by this much.
MODEL_SLACK_MS = 1.0
#: The userspace transport's endpoints take a constant 0.38 ms longer per set-up than the kernel's
#: (``make validate-transport``): their statistics get this much more slack.
USERSPACE_EXTRA_MS = 0.5
#: A cell whose number of successes has a two-sided binomial p-value below this, under the
#: model's success probability, is flagged.
SUCCESS_ALPHA = 0.05


def slack_ms(strategy: str, base: float = MODEL_SLACK_MS) -> float:
    """The tolerance of a check for ``strategy``: ``base``, plus the userspace endpoints' offset."""
    return base + (USERSPACE_EXTRA_MS if family(strategy) == "userspace" else 0.0)


@dataclass(frozen=True)
class ModelSettings:
    """What the analytic model needs to know about a result folder's paths, kernel and profile."""

    rtt1_s: float
    rtt2_s: float
    rtt_source: str  # where the RTTs come from
    timer_s: float
    syn_retries: int
    applicable: bool  # False: loss not on the client's egress only, or linear SYN timeouts
    reason: str = ""
    #: The sweep's --timeout (the smallest of its invocations'): attempts not set up within it are
    #: censored, so the measured statistics cover set-ups within it, and so does the model (None: no timeout).
    censor_s: float | None = None


def measured_rtts_ms(metadata: dict[str, Any]) -> tuple[float, float] | None:
    """Mean over the workers' pre-flight RTT medians of both paths, or None if not recorded."""
    reports = [r for inv in metadata.get("invocations", []) for r in (inv.get("preflight") or {}).values()]
    if not reports:
        return None
    return (float(np.mean([r["path1"]["p50_ms"] for r in reports])),
            float(np.mean([r["path2"]["p50_ms"] for r in reports])))  # fmt: skip


def model_settings(metadata: dict[str, Any]) -> ModelSettings:
    """RTTs (measured when the folder has its pre-flight figures), the timer and the SYN settings."""
    profile = metadata["profile"]
    client = metadata.get("network", {}).get("sysctls", {}).get("client", {})
    syn_retries = int(profile.get("tcp_syn_retries") or client.get("net.ipv4.tcp_syn_retries", model.TCP_SYN_RETRIES))
    linear = client.get("net.ipv4.tcp_syn_linear_timeouts", "0")
    applicable, reason = True, ""
    if profile.get("loss_direction", "up") != "up":
        applicable, reason = False, "model covers loss on the client's egress (loss_direction = up) only"
    elif str(linear) != "0":
        applicable, reason = False, f"model assumes exponential SYN back-off; tcp_syn_linear_timeouts = {linear}"
    measured = measured_rtts_ms(metadata)
    if measured is None:
        rtt1, rtt2, source = float(profile["path1"]["rtt_ms"]), float(profile["path2"]["rtt_ms"]), "configured"
    else:
        (rtt1, rtt2), source = measured, "measured: pre-flight p50"
    timeouts = [inv.get("arguments", {}).get("timeout_s") for inv in metadata.get("invocations", [])]
    censor = min((float(t) for t in timeouts if t), default=None)
    return ModelSettings(rtt1 / 1000, rtt2 / 1000, source, float(profile["timer_s"]), syn_retries, applicable, reason,
                         censor)  # fmt: skip


@functools.cache
def _setup_times(strategy: str, loss: float, settings: ModelSettings) -> model.SetupTimes | None:
    if strategy in with_setup_path(SetupPath.DEFAULT):
        times = model.single_path(settings.rtt1_s, loss, syn_retries=settings.syn_retries)
    elif strategy in with_setup_path(SetupPath.FASTEST, SetupPath.TIMER):
        start2 = settings.timer_s if strategy in with_setup_path(SetupPath.TIMER) else 0.0
        times = model.two_path_race(settings.rtt1_s, loss, settings.rtt2_s, start2, syn_retries=settings.syn_retries)
    else:
        return None
    if settings.censor_s is None:
        return times
    # The client's deadline covers the whole set-up (its request answered), so both metrics keep
    # the attempts set up within it. The model has no joint law of the two: an accept() within the
    # timeout whose request comes after it is kept, a slight excess in the cells the timeout cuts.
    return model.SetupTimes(times.accept.within(settings.censor_s), times.request.within(settings.censor_s))


def setup_times(strategy: str, loss_pct: float, settings: ModelSettings) -> model.SetupTimes | None:
    """The model of one (strategy, loss) cell, or None where no model applies."""
    if not settings.applicable:
        return None
    return _setup_times(strategy, loss_pct / 100, settings)


def _attempts(final: pd.DataFrame) -> pd.DataFrame:
    """Per (strategy, loss_pct): counts and the race's facts."""
    flags = final.assign(
        is_ok=final["status"] == "ok",
        is_failed=final["status"] == "failed",
        is_censored=final["status"] == "censored",
        path2_win=(final["winner_path"].fillna(0) == 2).astype(float).where(final["status"] == "ok"),
        fallback=final["fallback_tcp"].fillna(False).astype(bool),
        losers=final["losers_accepted"].fillna(0),
    )
    return flags.groupby(["strategy", "loss_pct"], sort=False).agg(
        runs=("status", "size"),
        ok=("is_ok", "sum"),
        failed=("is_failed", "sum"),
        censored=("is_censored", "sum"),
        path2_win_share=("path2_win", "mean"),
        losers_accepted=("losers", "sum"),
        fallbacks=("fallback", "sum"),
    )


def _inside(value: float, interval: tuple[float, float], slack: float) -> bool:
    return interval[0] - slack <= value <= interval[1] + slack


def summarise(runs: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame:
    """One row per (strategy, loss_pct, metric); ``error`` rows (broken attempts, rerun on resume) left out."""
    settings = model_settings(metadata)
    final = runs[runs["status"].isin(FINAL_STATUSES)]
    attempts = _attempts(final)
    ok = final[final["status"] == "ok"]
    rows: list[dict[str, Any]] = []
    for key, counts in attempts.iterrows():
        index: tuple[Any, ...] = key  # type: ignore[assignment]
        strategy, loss = str(index[0]), float(index[1])
        n_runs, n_ok = int(counts["runs"]), int(counts["ok"])
        n_bad = int(counts["failed"]) + int(counts["censored"])
        bad_low, bad_high = clopper_pearson(n_bad, n_runs, 0.95)
        expect = setup_times(strategy, loss, settings)
        success = expect.success if expect is not None else math.nan
        success_p = math.nan
        if expect is not None:
            success_p = float(scipy_stats.binomtest(n_ok, n_runs, min(max(success, 0.0), 1.0)).pvalue)
        mine = ok[(ok["strategy"] == strategy) & (ok["loss_pct"] == loss)]
        for metric, column in METRICS.items():
            times = mine[column].to_numpy(dtype=float)
            mean, low, high = bootstrap_mean_ci(times) if times.size else (math.nan,) * 3
            median = float(np.median(times)) if times.size else math.nan
            row: dict[str, Any] = {
                "strategy": strategy, "family": family(strategy), "loss_pct": loss, "metric": metric,
                "runs": n_runs, "ok": n_ok, "failed": int(counts["failed"]), "censored": int(counts["censored"]),
                "failed_share": n_bad / n_runs, "failed_ci_low": bad_low, "failed_ci_high": bad_high,
                "mean_ms": mean, "ci_low_ms": low, "ci_high_ms": high, "median_ms": median,
            }  # fmt: skip
            row.update(_model_columns(expect, metric, n_ok, n_runs, mean, median, slack_ms(strategy)))
            row.update(model_success=success, success_p=success_p,
                       path2_win_share=float(counts["path2_win_share"]) if n_ok else math.nan,
                       losers_accepted=int(counts["losers_accepted"]), fallbacks=int(counts["fallbacks"]))  # fmt: skip
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_order"] = table["strategy"].map(lambda s: _STRATEGY_RANK.get(s, 99))
    table["_metric"] = table["metric"].map(list(METRICS).index)
    return (table.sort_values(["_metric", "_order", "strategy", "loss_pct"], kind="stable")
            .drop(columns=["_order", "_metric"]).reset_index(drop=True))  # fmt: skip


def _model_columns(
    expect: model.SetupTimes | None, metric: str, n_ok: int, n_runs: int, mean: float, median: float, slack: float
) -> dict[str, Any]:
    nan = math.nan
    columns: dict[str, Any] = dict.fromkeys(
        ("model_mean_ms", "model_mean_low_ms", "model_mean_high_ms", "model_median_ms", "model_median_low_ms",
         "model_median_high_ms"), nan)  # fmt: skip
    columns.update(mean_agrees=pd.NA, median_agrees=pd.NA)
    if expect is None:
        return columns
    dist = expect.metric(metric)
    if dist.success > 0:
        columns.update(model_mean_ms=1000 * dist.mean_s, model_median_ms=1000 * dist.median_s)
    if n_ok == 0:
        # No statistic to compare: agreement means the model, too, makes no success likely.
        consistent = bool(scipy_stats.binom.pmf(0, n_runs, min(max(expect.success, 0.0), 1.0)) >= 0.025)
        columns.update(mean_agrees=consistent, median_agrees=consistent)
        return columns
    mean_low, mean_high = dist.interval(n_ok, "mean")
    median_low, median_high = dist.interval(n_ok, "median")
    columns.update(
        model_mean_low_ms=1000 * mean_low, model_mean_high_ms=1000 * mean_high,
        model_median_low_ms=1000 * median_low, model_median_high_ms=1000 * median_high,
        mean_agrees=_inside(mean, (1000 * mean_low, 1000 * mean_high), slack),
        median_agrees=_inside(median, (1000 * median_low, 1000 * median_high), slack),
    )  # fmt: skip
    return columns


_STRATEGY_RANK = {name: index for index, name in enumerate(STRATEGIES)}


@dataclass(frozen=True)
class DeadHeat:
    """Path 1's share of RobE_SIM's dead heats (equal RTTs): estimate, interval and test against 1/2."""

    attempts: int
    path1_wins: int
    share: float  # maximum-likelihood estimate of P(path 1 wins | both first SYNs delivered)
    low: float
    high: float
    p_half: float  # likelihood-ratio test of share = 1/2
    model_share: float = model.PATH1_DEAD_HEAT_SHARE


def dead_heat(runs: pd.DataFrame, metadata: dict[str, Any]) -> DeadHeat | None:
    """Path 1 wins a RobE_SIM attempt at loss p with probability (1 - p) x share (its first SYN must
    get through, then it wins the dead heat): the share's estimate over every loss level."""
    profile = metadata.get("profile", {})
    if profile.get("path1", {}).get("rtt_ms") != profile.get("path2", {}).get("rtt_ms"):
        return None
    sim = runs[(runs["strategy"] == "robe-sim") & (runs["status"] == "ok") & (runs["loss_pct"] < 100)]
    if sim.empty:
        return None
    grouped = sim.groupby("loss_pct")["winner_path"].agg(wins=lambda s: int((s == 1).sum()), n="size")
    reach = 1 - grouped.index.to_numpy(dtype=float) / 100
    wins, n = grouped["wins"].to_numpy(dtype=float), grouped["n"].to_numpy(dtype=float)

    def log_likelihood(share: float) -> float:
        prob = np.clip(reach * share, 1e-12, 1 - 1e-12)
        return float(np.sum(wins * np.log(prob) + (n - wins) * np.log(1 - prob)))

    grid = np.linspace(0.001, 0.999, 999)
    values = np.array([log_likelihood(s) for s in grid])
    best = float(grid[int(np.argmax(values))])
    # Profile-likelihood 95 % interval: where the log-likelihood is within chi2(1, 0.95) / 2 of its top.
    inside = grid[values >= values.max() - scipy_stats.chi2.ppf(0.95, 1) / 2]
    p_half = float(scipy_stats.chi2.sf(2 * (values.max() - log_likelihood(0.5)), 1))
    return DeadHeat(int(n.sum()), int(wins.sum()), best, float(inside.min()), float(inside.max()), p_half)
