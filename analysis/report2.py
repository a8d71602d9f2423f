"""The experiment 2 report: load times per site and strategy, RobE against classic MPTCP, checks.

``write_report`` writes ``report.md`` from the tables of ``analysis.experiment2_cells``: one row per
(site, strategy) with successful loads, mean (95 % bootstrap CI), median, objects and replay misses;
one row per site and (classic, RobE) pair with the ratio of the means and its bootstrap CI; the
completeness checks and the run's provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis import cost
from analysis.experiment2_cells import PAPER_IMPROVEMENT_PCT
from analysis.ownership import hand_to_invoking_user


def render_markdown(runs: pd.DataFrame, metadata: dict[str, Any], cells: pd.DataFrame, gains: pd.DataFrame) -> str:
    """The report text."""
    profile = metadata.get("profile", {})
    lines = ["# Experiment 2 report", "",
             f"Profile `{profile.get('name')}` ({profile.get('corpus', '?')} corpus): LTE "
             f"{profile.get('lte', {}).get('rtt_ms')} ms (default route) and DSL {profile.get('dsl', {}).get('rtt_ms')}"
             f" ms, internet leg {profile.get('internet_rtt_ms')} ms; {len(runs)} loads stored; commit "
             f"{metadata.get('git', {}).get('commit', '?')}.", ""]  # fmt: skip
    walls = [inv.get("wall_time_s") for inv in metadata.get("invocations", []) if inv.get("wall_time_s")]
    if walls:
        lines += [f"Wall time of the invocations: {', '.join(f'{w / 60:.1f} min' for w in walls)}.", ""]
    table = pd.DataFrame({
        "site": cells["site"], "strategy": cells["strategy"],
        "ok/loads": [f"{o}/{n}" for o, n in zip(cells["ok"], cells["loads"], strict=True)],
        "mean load [ms]": cells["mean_ms"].map(lambda v: f"{v:.0f}"),
        "95 % CI": [f"{lo:.0f}-{hi:.0f}" for lo, hi in zip(cells["ci_low_ms"], cells["ci_high_ms"], strict=True)],
        "median": cells["median_ms"].map(lambda v: f"{v:.0f}"),
        "objects": cells["objects"], "misses": cells["misses"],
    })  # fmt: skip
    lines += [table.to_markdown(index=False, disable_numparse=True), ""]
    low, high = PAPER_IMPROVEMENT_PCT
    lines += [f"## RobE against MPTCP per site (paper: improvements of {low:.0f}-{high:.0f} % in most cases)", "",
              "Improvement = mean classic / mean RobE - 1; its 95 % CI is the percentile bootstrap of the ratio "
              "(both samples resampled). `RobE faster`: the ratio's CI lies above 1.", ""]  # fmt: skip
    if not gains.empty:
        table = pd.DataFrame({
            "site": gains["site"], "pair": gains["pair"],
            "n": [f"{a}/{b}" for a, b in zip(gains["n_classic"], gains["n_robe"], strict=True)],
            "classic [ms]": gains["classic_ms"].map(lambda v: f"{v:.0f}"),
            "RobE [ms]": gains["robe_ms"].map(lambda v: f"{v:.0f}"),
            "ratio [95 % CI]": [f"{r:.2f} [{lo:.2f}, {hi:.2f}]" for r, lo, hi in
                                zip(gains["ratio"], gains["ratio_ci_low"], gains["ratio_ci_high"], strict=True)],
            "improvement": gains["improvement_pct"].map(lambda v: f"{v:+.0f} %"),
            "RobE faster": gains["robe_faster"].map(lambda v: "yes" if v else "no"),
            "CIs of the means apart": gains["cis_apart"].map(lambda v: "yes" if v else "no"),
        })  # fmt: skip
        lines += [table.to_markdown(index=False, disable_numparse=True)]
    failed = runs[runs["status"] != "ok"]
    ok = runs[runs["status"] == "ok"]
    complete = (ok["objects_fetched"] == ok["objects_served"]) & (ok["objects_served"] == ok["objects_expected"])
    mismatched = ok[~complete]
    kernel = gains[gains["classic"] == "mptcp"] if not gains.empty else gains
    faster = bool(len(kernel)) and bool(kernel["robe_faster"].all())
    in_band = int(kernel["improvement_pct"].between(low, high).sum()) if len(kernel) else 0
    first = f" (first: {failed['run_id'].iloc[0]}: {failed['error'].iloc[0]})" if len(failed) else ""
    lines += [
        "",
        "## Checks",
        "",
        f"- robe-sim loads faster than mptcp at every site (ratio CI above 1): {'yes' if faster else 'NO'}",
        f"- sites where robe-sim's improvement over mptcp lies in the paper's {low:.0f}-{high:.0f} %: "
        f"{in_band} of {len(kernel)}",
        f"- loads not ok: {len(failed)} of {len(runs)}{first}",
        f"- replay misses over all loads: {int(runs['replay_misses'].fillna(0).sum())}",
        f"- ok loads whose fetched / served / page object counts differ: {len(mismatched)}",
        "",
        *cost.report_lines(runs[runs["status"] != "error"], ["strategy"]),
    ]
    return "\n".join(lines)


def write_report(
    folder: Path, runs: pd.DataFrame, metadata: dict[str, Any], cells: pd.DataFrame, gains: pd.DataFrame
) -> Path:
    """Write ``report.md`` in an experiment 2 folder; return its path."""
    path = folder / "report.md"
    path.write_text(render_markdown(runs, metadata, cells, gains))
    hand_to_invoking_user(path)
    return path
