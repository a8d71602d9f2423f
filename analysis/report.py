"""The experiment 1 report: every cell against the model, and the acceptance figures, as Markdown.

``write_report(folder)`` reads a result folder and writes ``report.md`` beside it: per metric
(connect() -> accept(), the paper's; connect() -> request at the server) one row per (strategy,
loss) with the number of attempts, the measured median and mean (95 % bootstrap CI) and the
model's, each with the 95 % interval in which that statistic of that many successful attempts
falls; the attempts' facts (failures with their interval, the model's success probability and a
binomial test of the count, path-2 wins, accepted losers, TCP fall-backs); the model's agreement
count; RobE_SIM's dead heat; and the acceptance checks of issue 3.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import cost
from analysis.experiment1_cells import (
    METRIC_LABELS,
    METRICS,
    MODEL_SLACK_MS,
    SUCCESS_ALPHA,
    USERSPACE_EXTRA_MS,
    DeadHeat,
    dead_heat,
    model_settings,
    slack_ms,
)
from analysis.figure8 import load
from analysis.ownership import hand_to_invoking_user
from analysis.sweep_timing import sweep_lines
from robe.strategies import SetupPath, with_setup_path

ZERO_LOSS_TOLERANCE_MS = 1.0


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _interval(low: Any, high: Any, digits: int = 1) -> str:
    return f"[{_fmt(low, digits)}, {_fmt(high, digits)}]"


def _agrees(value: Any) -> str:
    return "–" if value is pd.NA or value is None else ("yes" if value else "**no**")


def expected_zero_loss_ms(strategy: str, rtt1_ms: float, rtt2_ms: float) -> float:
    """1.5 x RTT of the path the strategy sets up over when nothing is lost."""
    fastest = strategy in with_setup_path(SetupPath.FASTEST)
    return 1.5 * (min(rtt1_ms, rtt2_ms) if fastest else rtt1_ms)


def statistics_outside(cells: pd.DataFrame) -> tuple[int, int, list[str]]:
    """(outside, judged, names): how many (cell, metric, mean/median) statistics lie outside the model's
    95 % interval, of how many with a model."""
    outside: list[str] = []
    judged = 0
    for _, row in cells.iterrows():
        for statistic in ("mean", "median"):
            verdict = row[f"{statistic}_agrees"]
            if verdict is pd.NA:
                continue
            judged += 1
            if not verdict:
                outside.append(f"{row['strategy']}@{row['loss_pct']:g}% {row['metric']} {statistic}")
    return len(outside), judged, outside


def acceptance(cells: pd.DataFrame, metadata: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(check, passed, figures) for the checks this folder's data allow (on the request metric, as
    issue 3 defined them, and the model's agreement on both metrics)."""
    profile = metadata["profile"]
    rtt1, rtt2 = float(profile["path1"]["rtt_ms"]), float(profile["path2"]["rtt_ms"])
    request = cells[cells["metric"] == "request"]
    checks: list[tuple[str, bool, str]] = []
    # RobE_IPS's path depends on what earlier connections showed: no closed-form expectation.
    selected = with_setup_path(SetupPath.SELECTED)
    for _, p in request[(request["loss_pct"] == 0) & ~request["strategy"].isin(selected)].iterrows():
        target = expected_zero_loss_ms(p["strategy"], rtt1, rtt2)
        error = p["median_ms"] - target
        tolerance = slack_ms(p["strategy"], ZERO_LOSS_TOLERANCE_MS)
        checks.append((f"0 % loss, {p['strategy']}: median within {tolerance:g} ms of 1.5 x RTT",
                       abs(error) <= tolerance,
                       f"median {p['median_ms']:.2f} ms, 1.5 x RTT = {target:.1f} ms, "
                       f"error {error:+.2f} ms"))  # fmt: skip
    for _, p in request[(request["loss_pct"] == 100) & ~request["strategy"].isin(selected)].iterrows():
        if p["strategy"] in with_setup_path(SetupPath.DEFAULT):
            checks.append((f"100 % loss, {p['strategy']}: every run fails", p["ok"] == 0,
                           f"{p['ok']}/{p['runs']} connected"))  # fmt: skip
        else:
            checks.append((f"100 % loss, {p['strategy']}: every run connects", p["ok"] == p["runs"],
                           f"{p['ok']}/{p['runs']} connected, mean {_fmt(p['mean_ms'])} ms"))  # fmt: skip
    zero = dict(
        zip(
            request.loc[request["loss_pct"] == 0, "strategy"],
            request.loc[request["loss_pct"] == 0, "median_ms"],
            strict=True,
        )
    )
    if rtt1 != rtt2 and "mptcp" in zero and "robe-sim" in zero:
        ratio = float(zero["mptcp"]) / float(zero["robe-sim"])
        target = rtt1 / rtt2
        checks.append((f"acceleration A_i = median mptcp / median robe-sim = {target:.1f} +- 0.1 (eq. 4)",
                       abs(ratio - target) <= 0.1, f"A_i = {ratio:.3f}"))  # fmt: skip
    outside, judged, names = statistics_outside(cells)
    if judged:
        checks.append((f"every statistic (mean and median, both metrics) inside the model's 95 % interval "
                       f"(+-{MODEL_SLACK_MS:g} ms, userspace +-{MODEL_SLACK_MS + USERSPACE_EXTRA_MS:g} ms)",
                       not outside, f"{judged - outside}/{judged} inside"
                       + (f"; outside: {', '.join(names)}" if names else "")
                       + f" (by chance alone about {0.05 * judged:.1f} fall outside a 95 % interval)"))  # fmt: skip
    return checks


def _metric_table(cells: pd.DataFrame, metric: str) -> str:
    mine = cells[cells["metric"] == metric]
    table = pd.DataFrame({
        "strategy": mine["strategy"],
        "loss %": mine["loss_pct"].map(lambda v: f"{v:g}"),
        "ok/runs": [f"{o}/{r}" for o, r in zip(mine["ok"], mine["runs"], strict=True)],
        "median": mine["median_ms"].map(_fmt),
        "model median [95 % int.]": [f"{_fmt(m)} {_interval(lo, hi)}" for m, lo, hi in
                                     zip(mine["model_median_ms"], mine["model_median_low_ms"],
                                         mine["model_median_high_ms"], strict=True)],
        "agrees (median)": mine["median_agrees"].map(_agrees),
        "mean [95 % CI]": [f"{_fmt(m)} {_interval(lo, hi)}" for m, lo, hi in
                           zip(mine["mean_ms"], mine["ci_low_ms"], mine["ci_high_ms"], strict=True)],
        "model mean [95 % int.]": [f"{_fmt(m)} {_interval(lo, hi)}" for m, lo, hi in
                                   zip(mine["model_mean_ms"], mine["model_mean_low_ms"], mine["model_mean_high_ms"],
                                       strict=True)],
        "agrees (mean)": mine["mean_agrees"].map(_agrees),
    })  # fmt: skip
    return table.to_markdown(index=False, disable_numparse=True)


def _attempts_table(cells: pd.DataFrame) -> str:
    mine = cells[cells["metric"] == "request"]
    table = pd.DataFrame({
        "strategy": mine["strategy"],
        "loss %": mine["loss_pct"].map(lambda v: f"{v:g}"),
        "runs": mine["runs"],
        "failed": mine["failed"],
        "censored": mine["censored"],
        "failed % [95 % CI]": [f"{100 * s:.0f} {_interval(100 * lo, 100 * hi, 0)}" for s, lo, hi in
                               zip(mine["failed_share"], mine["failed_ci_low"], mine["failed_ci_high"], strict=True)],
        "model success": mine["model_success"].map(lambda v: _fmt(v, 3)),
        "binomial p": [f"{_fmt(p, 3)}{' **' if p < SUCCESS_ALPHA else ''}" for p in mine["success_p"]],
        "path-2 wins": mine["path2_win_share"].map(lambda v: "–" if math.isnan(v) else f"{100 * v:.0f} %"),
        "losers accepted": mine["losers_accepted"],
        "TCP fallbacks": mine["fallbacks"],
    })  # fmt: skip
    return table.to_markdown(index=False, disable_numparse=True)


def _dead_heat_lines(heat: DeadHeat | None) -> list[str]:
    if heat is None:
        return []
    return [
        "## RobE_SIM's dead heat",
        "",
        f"Both paths have the same RTT, so when path 1's first SYN gets through the two SYN/ACKs return "
        f"together. Path 1 won {heat.path1_wins} of {heat.attempts} successful attempts below 100 % loss; "
        f"with P(path 1 wins) = (1 - loss) x share, the share of dead heats path 1 wins is "
        f"{heat.share:.2f} (95 % profile-likelihood interval {heat.low:.2f}-{heat.high:.2f}; a fair 0.5 is "
        f"rejected, p = {heat.p_half:.1g}). Its connect() is issued first. The model uses "
        f"{heat.model_share:.2f}.",
        "",
    ]


def render_markdown(runs: pd.DataFrame, cells: pd.DataFrame, metadata: dict[str, Any]) -> str:
    """The report text."""
    profile = metadata["profile"]
    git = metadata.get("git", {})
    backend = metadata.get("link_backend", {}).get("backend", "?")
    settings = model_settings(metadata)
    outside, judged, _ = statistics_outside(cells)
    lines = [
        f"# Experiment 1, profile `{profile['name']}`",
        "",
        f"{profile.get('description', '')}. Paths: RTT {profile['path1']['rtt_ms']} ms (default) and "
        f"{profile['path2']['rtt_ms']} ms; loss on path 1, direction `{profile['loss_direction']}`; "
        f"link backend `{backend}`; code {str(git.get('commit'))[:10]}{' (dirty)' if git.get('dirty') else ''}; "
        f"kernel {metadata.get('network', {}).get('kernel', '?')}.",
        "",
        "Two metrics, from connect() at the client, on the server's clock: **connect() -> accept()** (the "
        "server's accept() returned: the metric of the paper's Figure 8, column `accept_ms`) and "
        "**connect() -> request** (the first request bytes arrived at the server: the connection carries "
        "data, column `setup_ms`). Times in ms; mean with its 95 % bootstrap CI; median; statistics of the "
        "successful attempts.",
        "",
    ]
    if settings.applicable:
        censored = ""
        if settings.censor_s is not None:
            censored = (f"Censored at the sweep's --timeout {settings.censor_s:g} s, as the attempts are: only "
                        "set-ups within it count. ")  # fmt: skip
        lines += [
            f"Model (`analysis/model.py`): RTT {1000 * settings.rtt1_s:.2f} / {1000 * settings.rtt2_s:.2f} ms "
            f"({settings.rtt_source}), {settings.syn_retries} SYN retries, timer {settings.timer_s:g} s. {censored}"
            "Its 95 % interval is where the mean (median) of as many successful attempts as were measured "
            f"falls; a statistic agrees when it lies inside, widened by {MODEL_SLACK_MS:g} ms "
            f"({MODEL_SLACK_MS + USERSPACE_EXTRA_MS:g} ms for userspace strategies) for processing overheads. "
            f"**{outside} of {judged} statistics lie outside** (cells without a successful attempt agree "
            "when the model, too, makes that likely).",
            "",
        ]
    else:
        lines += [f"No model for this folder: {settings.reason}.", ""]
    for metric in METRICS:
        lines += [f"## {METRIC_LABELS[metric]}", "", _metric_table(cells, metric), ""]
    lines += ["## Attempts", "", "Failed: the kernel gave up; `binomial p`: two-sided test of the number of "
              f"successes under the model's success probability (** below {SUCCESS_ALPHA:g}).", "",
              _attempts_table(cells), ""]  # fmt: skip
    lines += _dead_heat_lines(dead_heat(runs, metadata))
    lines += cost.report_lines(runs[runs["status"] != "error"], ["strategy", "loss_pct"])
    lines += ["## Acceptance", ""]
    for name, passed, figures in acceptance(cells, metadata):
        lines.append(f"- {'PASS' if passed else 'FAIL'}: {name}: {figures}")
    lines += sweep_lines(runs, metadata)
    return "\n".join(lines) + "\n"


def write_report(folder: Path, loaded: tuple[pd.DataFrame, dict[str, Any], pd.DataFrame] | None = None) -> Path:
    """Write ``report.md`` in a result folder; return its path."""
    runs, metadata, cells = loaded if loaded is not None else load(folder)
    path = folder / "report.md"
    path.write_text(render_markdown(runs, cells, metadata))
    hand_to_invoking_user(path)
    return path
