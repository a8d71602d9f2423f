"""The cost of robustness (issue 14): what each strategy puts on the wire and asks of the server.

One table for every report: per strategy (and per loss level in experiment 1), the means per
connection of what the endpoints saw (``attempts``: potentially initial subflows opened;
``resets_sent``: losers the client reset; ``losers_accepted``: losers the server had already
accepted; ``subflows_end``: subflows at the end) and of what the client's access links carried
(``wire_*``: SYNs sent, SYN/ACKs received, RSTs sent and received, TCP packets and bytes both ways;
``topologies.linkcounters``). Experiment 2 counts per page load: its figures are divided by the
load's connections, and its bytes are compared with ``mptcp``'s on the same sites.

Only the columns a folder has values for are shown (folders stored before issue 14 have none:
then there is no table).
"""

from __future__ import annotations

import pandas as pd

from analysis import style

#: column -> its heading: endpoint counters first, then the wire.
COLUMNS = {
    "attempts": "attempts",
    "resets_sent": "RSTs by client (losers)",
    "losers_accepted": "losers accepted by server",
    "subflows_end": "subflows at end",
    "wire_syns_sent": "SYNs sent",
    "wire_synacks_received": "SYN/ACKs received",
    "wire_rsts_sent": "RSTs sent",
    "wire_rsts_received": "RSTs received",
    "wire_packets": "TCP packets",
    "wire_bytes": "bytes",
}
BASELINE = "mptcp"


def cost_columns(runs: pd.DataFrame) -> list[str]:
    """The cost columns with at least one value in ``runs``."""
    return [c for c in COLUMNS if c in runs.columns and runs[c].notna().any()]


def per_connection(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Means per connection of the cost columns, per ``by`` group (strategies in the figures' order),
    with the number of connections (``n``). A row is one connection (experiment 1) unless ``runs``
    has a ``connections`` column (experiment 2: one row per load): then sums are divided by the
    loads' connections."""
    columns = cost_columns(runs)
    if not columns:
        return pd.DataFrame()
    ok = runs[runs["status"].isin(["ok", "failed", "censored"])]
    values = ok[[*by, *columns]].astype({c: "float64" for c in columns})
    if "connections" in ok.columns:
        values = values.assign(n=ok["connections"].astype("float64"))
        sums = values.groupby(by).sum(min_count=1)
        table = sums[columns].div(sums["n"], axis=0).assign(n=sums["n"].astype(int))
    else:
        grouped = values.groupby(by)
        table = grouped.mean().assign(n=grouped.size())
    order = style.ordered(table.index.get_level_values(0))
    return table.reindex(order, level=0) if len(by) > 1 else table.reindex(order)  # levels below stay sorted


def extra_bytes_pct(runs: pd.DataFrame) -> pd.Series:
    """Per strategy: its mean bytes on the wire per load against ``mptcp``'s, site by site, averaged
    over the sites (experiment 2; %). Empty without ``mptcp`` or without wire counts."""
    if "wire_bytes" not in cost_columns(runs) or BASELINE not in set(runs["strategy"]):
        return pd.Series(dtype="float64")
    ok = runs[runs["status"] == "ok"]
    means = ok.astype({"wire_bytes": "float64"}).groupby(["site", "strategy"])["wire_bytes"].mean().unstack()
    ratio = means.div(means[BASELINE], axis=0) - 1
    result = 100 * ratio.mean()
    return result.reindex(style.ordered(result.index))


def markdown_table(table: pd.DataFrame, extra: pd.Series | None = None) -> str:
    """``per_connection``'s table as Markdown (bytes and packets as integers, counts to two places)."""
    shown = table.rename(columns=COLUMNS).reset_index().rename(columns={"loss_pct": "loss %"})
    for column in shown.columns:
        if column == "loss %":
            shown[column] = shown[column].map(lambda v: f"{v:g}")
        elif column in ("bytes", "TCP packets"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:,.0f}")
        elif shown[column].dtype == "float64":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    if extra is not None and not extra.empty:
        shown[f"bytes vs {BASELINE}"] = shown["strategy"].map(lambda s: f"{extra[s]:+.1f} %" if s in extra else "")
    return shown.to_markdown(index=False, disable_numparse=True)


DESCRIPTION = (
    "Means per connection. From the endpoints: `attempts` (potentially initial subflows the client opened, one "
    "SYN each before retransmissions), `RSTs by client (losers)` (attempts the client reset once another won), "
    "`losers accepted by server` (of those, the ones the server had already accepted: half-open work it saw), "
    "`subflows at end`. On the client's access links, both paths (iptables counters, TCP only): SYNs sent "
    "(connections and MP_JOINs, retransmissions included), SYN/ACKs received, RSTs sent and received, TCP "
    "packets and their bytes, both directions."
)


def report_lines(runs: pd.DataFrame, by: list[str]) -> list[str]:
    """The ``## Cost of robustness`` section of a report (no lines when the folder has no counts)."""
    table = per_connection(runs, by)
    if table.empty:
        return []
    extra = extra_bytes_pct(runs) if "site" in runs.columns else None
    lines = ["## Cost of robustness", "", DESCRIPTION]
    if extra is not None and not extra.empty:
        lines[-1] += (
            f" `bytes vs {BASELINE}`: mean bytes per load against {BASELINE}'s on the same site, averaged over "
            "the sites."
        )
    return [*lines, "", markdown_table(table, extra), ""]
