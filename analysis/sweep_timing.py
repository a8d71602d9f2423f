"""The report's section on how the sweep ran: wall time, workers, censoring, and the timing canary.

The canary (``experiments.canary``) flags rows measured while the host was too busy (median probe
RTT more than 1 ms off the configured RTT, before or after the attempt). Flagged rows are kept in
the tables (a busy host makes set-up times longer, never shorter, and the count says how many
could be affected); this section counts them and names their cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def sweep_lines(runs: pd.DataFrame, metadata: dict[str, Any]) -> list[str]:
    """Markdown lines of the section for the typed runs (``analysis.schema.read_runs``); the canary
    lines say so for folders made before the canary existed."""
    invocations = metadata.get("invocations", [])
    lines = ["", "## How the sweep ran", ""]
    wall = sum(float(inv.get("wall_time_s") or 0) for inv in invocations)
    setups = []
    for inv in invocations:
        args = inv.get("arguments", {})
        where = f"cluster {args['cluster']}" if args.get("cluster") else f"{args.get('jobs', '?')} networks"
        setups.append(f"{where}, order {args.get('schedule', 'profile')}, timeout {args.get('timeout_s') or 'none'}")
    lines.append(f"- Wall time {wall:.0f} s over {len(invocations)} invocation(s): {'; '.join(setups) or '?'}.")
    censored = int((runs["status"] == "censored").sum())
    if censored:
        lines.append(f"- {censored} attempt(s) censored at the sweep's --timeout (no set-up within it): they "
                     "count in the failed-or-censored share, not in means and medians.")  # fmt: skip
    measured = runs[runs["canary_flagged"].notna()]
    if measured.empty:
        lines.append("- Timing canary: not recorded (rows made before it existed).")
        return lines
    flagged = measured[measured["canary_flagged"].astype(bool)]
    errors = measured["canary_ms"].dropna().to_numpy(dtype=float)
    worst = float(errors[np.abs(errors).argmax()]) if errors.size else float("nan")
    lines.append(f"- Timing canary: {len(flagged)} of {len(measured)} rows flagged (median probe RTT on path 2 "
                 f"more than 1 ms off, before or after the attempt, or a burst lost); worst error {worst:+.2f} ms; "
                 "flagged rows are kept in the tables above.")  # fmt: skip
    if not flagged.empty:
        cells = (flagged["strategy"] + " " + flagged["loss_pct"].map(lambda v: f"{v:g}") + " %").value_counts()
        lines.append("  Flagged rows by cell: " + ", ".join(f"{cell} ({n})" for cell, n in cells.items()))
    retried = int((runs["retries"].fillna(0) > 0).sum())
    if retried:
        lines.append(f"- {retried} attempt(s) ran again after their engine worker died (column `retries`).")
    places = runs.loc[runs["host"].notna(), ["host", "kernel"]].drop_duplicates()
    hosts = sorted(f"{host} ({kernel})" for host, kernel in zip(places["host"], places["kernel"], strict=True))
    if hosts:
        lines.append(f"- Measured on: {', '.join(hosts)}.")
    return lines
