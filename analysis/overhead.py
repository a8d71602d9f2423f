"""The testbed's own cost at zero delay: per connection and per request, with and without proxies.

Reads an experiment 2 folder run with the ``zero`` profile (every delay 0, fast links), where a
load takes only what wget, the proxies, the replay server, the userspace transport and the kernels
spend. For each strategy, an ordinary least-squares fit over every load of every site,

    wget_ms = base + per_http_conn x HTTP connections + per_https_conn x HTTPS connections
              + per_request x objects,

splits that time between connections and requests (the nine pages differ enough in both; an
HTTPS connection also carries a TLS handshake, so it gets its own cost); the
overhead of a strategy is its fit minus the fit of ``direct`` (wget straight to the replay server,
no proxies). Kernel MPTCP strategies are also compared with ``direct-mptcp`` (wget's own socket
made MPTCP by mptcpize): what remains there is the proxies', what ``direct-mptcp`` adds over
``direct`` is the kernel's.

``python -m analysis.overhead FOLDER [FOLDER ...]`` prints the table as Markdown and writes
``overhead.csv`` and ``overhead.md`` into each folder.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schema import EXPERIMENT2, read_connections, read_runs
from analysis.tables import markdown, per_folder_main
from robe.strategies import kernel_mptcp

BASELINE = "direct"
MPTCP_BASELINE = "direct-mptcp"
KERNEL_MPTCP = kernel_mptcp()


def read_loads(folder: Path) -> pd.DataFrame:
    """The ok loads of ``folder/runs.csv`` (the last row of a run id wins), with their HTTP and HTTPS
    connection counts from ``connections.csv`` (both read through the schema)."""
    runs = read_runs(folder, EXPERIMENT2)
    runs = runs.drop_duplicates("run_id", keep="last")
    runs = runs[runs["status"] == "ok"].copy()
    conns = read_connections(folder).drop_duplicates(["run_id", "conn"], keep="last")
    counts = conns.pivot_table(index="run_id", columns="scheme", values="conn", aggfunc="count", fill_value=0)
    for scheme in ("http", "https"):
        runs[f"{scheme}_connections"] = runs["run_id"].map(counts[scheme]) if scheme in counts else 0
    return runs


def fit(loads: pd.DataFrame, column: str = "wget_ms") -> dict[str, float]:
    """OLS of ``column`` on HTTP connections, HTTPS connections and objects (ms each)."""
    regressors = ["http_connections", "https_connections", "objects_expected"]
    design = np.column_stack([np.ones(len(loads)), *(loads[r] for r in regressors)]).astype(float)
    coef, *_ = np.linalg.lstsq(design, loads[column].astype(float).to_numpy(), rcond=None)
    residual = loads[column].astype(float).to_numpy() - design @ coef
    return {"base": coef[0], "per_http_conn": coef[1], "per_https_conn": coef[2], "per_request": coef[3],
            "rms_residual": float(np.sqrt(np.mean(residual**2))), "loads": float(len(loads))}  # fmt: skip


def overhead_table(runs: pd.DataFrame, column: str = "wget_ms") -> pd.DataFrame:
    """One row per strategy: its fit, and per-connection / per-request cost over ``direct`` (and
    over ``direct-mptcp`` for the kernel MPTCP strategies)."""
    fits = {strategy: fit(group, column) for strategy, group in runs.groupby("strategy")}
    rows = []
    for strategy, f in fits.items():
        row = {"strategy": strategy, **f}
        for suffix, name in (("direct", BASELINE), ("direct_mptcp", MPTCP_BASELINE)):
            base = fits.get(name)
            if base is None or (name == MPTCP_BASELINE and strategy not in KERNEL_MPTCP):
                continue
            for key, short in (("per_http_conn", "http_conn"), ("per_https_conn", "https_conn"),
                               ("per_request", "req")):  # fmt: skip
                row[f"{short}_over_{suffix}"] = f[key] - base[key]
        rows.append(row)
    table = pd.DataFrame(rows).set_index("strategy")
    order = [s for s in (BASELINE, MPTCP_BASELINE, "tcp", *KERNEL_MPTCP) if s in table.index]
    return table.loc[order + sorted(set(table.index) - set(order))]


def site_means(runs: pd.DataFrame, column: str = "wget_ms") -> pd.DataFrame:
    """Mean ``column`` per site and strategy (sites as rows)."""
    return runs.pivot_table(index="site", columns="strategy", values=column, aggfunc="mean")


def write_report(folder: Path) -> str:
    """Write overhead.csv and overhead.md into ``folder``; return the Markdown."""
    runs = read_loads(folder)
    table = overhead_table(runs)
    table.to_csv(folder / "overhead.csv", float_format="%.3f")
    text = (f"# Testbed overhead ({folder.name}): wget wall time fitted per strategy\n\n"
            "wget_ms = base + per_http_conn x HTTP connections + per_https_conn x HTTPS connections + "
            "per_request x objects (OLS over every ok load); "
            "`*_over_direct`: the strategy's cost minus the direct client's.\n\n"
            f"{markdown(table.drop(columns=['loads']))}\n\nMean wget wall time per site [ms]:\n\n"
            f"{site_means(runs).round(1).to_string()}\n")  # fmt: skip
    (folder / "overhead.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one report per folder."""
    return per_folder_main("analysis.overhead", __doc__ or "", write_report, argv)


if __name__ == "__main__":
    sys.exit(main())
