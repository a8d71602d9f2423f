"""Where a stored experiment 1 sweep spent its time, and what wall time another setting would give.

``python -m experiments.sweep_plan results/experiment1/paper [--out DIR]`` reads a stored runs.csv
(through ``analysis.schema``) and prints (and writes to ``DIR``: ``cells.csv``, ``plan.csv``,
``plan.md``, ``metadata.json``):

- each cell's worker-seconds (how long its attempts kept a network busy): from the row's own
  ``attempt_s`` where the sweep recorded it, else from the gap to the same worker's next row
  (``started_utc``, 1 s resolution), else from the row's figures (set-up time, or the kernel's
  give-up time for a failed attempt);
- a replay of the sweep under other settings: N networks, built one after the other
  (``--build-s`` each), attempts in the profile's random order or longest band first
  (``experiments.schedule``), optionally censored at ``--timeout`` seconds. Each replay draws every
  run's duration from the stored durations of its cell (a bootstrap, ``--draws`` times), so the
  table gives the median and the 99th percentile of the wall time, not one lucky order.

No root needed; nothing is measured again.
"""

from __future__ import annotations

import heapq
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schema import EXPERIMENT1, read_runs
from experiments.metadata import base_metadata, write_json
from experiments.profile import Experiment1Profile, RunSpec, expand_runs, parse_profile
from experiments.schedule import order_long_first
from robe_lab.cliparse import command_parser

#: Linux gives up on a SYN after 127 s (6 retries, 1 s doubling) and on a lost request after ~924.6 s.
SYN_GIVE_UP_S = 127.0
DATA_GIVE_UP_S = 924.6
#: What an attempt costs besides its own time: the settle sleep, reseeding, the row (measured ~0.1 s).
OVERHEAD_S = 0.1


def row_duration_s(row: pd.Series, hold_s: float) -> float:
    """An attempt's wall time estimated from its own figures (when no better source exists)."""
    if pd.notna(row["attempt_s"]):
        return float(row["attempt_s"])
    if row["status"] == "ok" and pd.notna(row["setup_ms"]):
        return float(row["setup_ms"]) / 1000 + hold_s + OVERHEAD_S
    if pd.notna(row.get("established_ms")):
        return float(row["established_ms"]) / 1000 + DATA_GIVE_UP_S + OVERHEAD_S
    return SYN_GIVE_UP_S + OVERHEAD_S


def attempt_durations(runs: pd.DataFrame, hold_s: float) -> pd.DataFrame:
    """``runs`` with a ``duration_s`` column (see the module docstring for its sources)."""
    runs = runs[runs["status"].isin(["ok", "failed", "censored"])].copy()
    runs["t"] = pd.to_datetime(runs["started_utc"])
    runs = runs.sort_values(["worker", "t"])
    gap = (runs.groupby("worker")["t"].shift(-1) - runs["t"]).dt.total_seconds()
    own = runs.apply(lambda row: row_duration_s(row, hold_s), axis=1)
    recorded = bool(runs["attempt_s"].notna().all())
    runs["duration_s"] = own if recorded else gap.fillna(own)
    return runs


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Worker-seconds per (strategy, loss) cell, longest first, with its share of the whole."""
    cells = runs.groupby(["strategy", "loss_pct"])["duration_s"].agg(["count", "sum", "median", "max"]).reset_index()
    cells["share"] = cells["sum"] / cells["sum"].sum()
    return cells.sort_values("sum", ascending=False).rename(columns={"sum": "worker_s"})


@dataclass(frozen=True)
class Setting:
    """One replayed setting."""

    networks: int
    order: str  # "profile" or "long-first"
    timeout_s: float | None


def list_schedule(durations: Sequence[float], networks: int, build_s: float) -> float:
    """Wall time when each free network takes the next attempt; network k is ready at (k+1) x build_s."""
    free = [(build_s * (k + 1), k) for k in range(networks)]
    heapq.heapify(free)
    end = build_s * networks
    for duration in durations:
        at, k = heapq.heappop(free)
        heapq.heappush(free, (at + duration, k))
        end = max(end, at + duration)
    return end


def replay(
    specs: Sequence[RunSpec],
    durations: dict[tuple[str, float], list[float]],
    setting: Setting,
    profile: Experiment1Profile,
    build_s: float,
    draws: int,
    seed: int = 1,
) -> list[float]:
    """Wall times of ``draws`` bootstrap replays of the sweep under ``setting``."""
    ordered = list(specs)
    if setting.order == "long-first":
        ordered = order_long_first(ordered, syn_retries=profile.tcp_syn_retries, timer_s=profile.timer_s,
                                   hold_s=profile.hold_ms / 1000)  # fmt: skip
    cap = None if setting.timeout_s is None else setting.timeout_s + profile.hold_ms / 1000 + OVERHEAD_S
    rng = random.Random(seed)
    walls = []
    for _ in range(draws):
        drawn = [rng.choice(durations[(spec.strategy, spec.loss_pct)]) for spec in ordered]
        if cap is not None:
            drawn = [min(d, cap) for d in drawn]
        walls.append(list_schedule(drawn, setting.networks, build_s))
    return walls


def plan(
    runs: pd.DataFrame, profile: Experiment1Profile, settings: Sequence[Setting], build_s: float, draws: int
) -> pd.DataFrame:
    """Median and p99 wall time of every setting."""
    durations: dict[tuple[str, float], list[float]] = {
        (str(strategy), float(loss)): [float(d) for d in group["duration_s"]]  # type: ignore[arg-type]
        for (strategy, loss), group in runs.groupby(["strategy", "loss_pct"])
    }
    specs = expand_runs(profile)
    rows = []
    for setting in settings:
        walls = replay(specs, durations, setting, profile, build_s, draws)
        rows.append({"networks": setting.networks, "order": setting.order, "timeout_s": setting.timeout_s,
                     "wall_p50_s": float(np.percentile(walls, 50)), "wall_p99_s": float(np.percentile(walls, 99)),
                     "wall_max_s": max(walls)})  # fmt: skip
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (numbers with 4 significant digits)."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = command_parser("experiments.sweep_plan", __doc__)
    parser.add_argument("folder", type=Path, help="an experiment 1 results folder (runs.csv + metadata.json)")
    parser.add_argument("--out", type=Path, default=None, help="write the tables and metadata here")
    parser.add_argument("--networks", type=int, nargs="+", default=[16, 32, 48, 64])
    parser.add_argument("--timeouts", type=float, nargs="+", default=[0, 300, 600], help="0: no timeout")
    parser.add_argument("--build-s", type=float, default=1.0, help="seconds to build one network (measured)")
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        metadata = json.loads((args.folder / "metadata.json").read_text())
        runs = read_runs(args.folder, EXPERIMENT1)
    except (OSError, ValueError) as err:  # SchemaError is a ValueError naming file:line:column
        parser.error(f"{args.folder}: {err}")
    profile = parse_profile(metadata["profile"], str(args.folder))
    runs = attempt_durations(runs, profile.hold_ms / 1000)
    cells = cell_table(runs)
    settings = [Setting(n, order, t or None) for n in args.networks for order in ("profile", "long-first")
                for t in args.timeouts]  # fmt: skip
    table = plan(runs, profile, settings, args.build_s, args.draws)
    stored_wall = sum(inv.get("wall_time_s", 0) for inv in metadata.get("invocations", []))
    lines = [f"# Sweep plan from {args.folder}", "",
             f"Stored wall time {stored_wall:.0f} s; attempts kept networks busy {runs['duration_s'].sum():.0f} "
             f"worker-seconds; the 10 longest cells hold {cells['share'].head(10).sum():.0%} of it.", "",
             "## Longest cells", "", markdown_table(cells.head(15)), "",
             f"## Replayed wall time ({args.draws} bootstrap draws, build {args.build_s:g} s per network)", "",
             markdown_table(table)]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        cells.to_csv(args.out / "cells.csv", index=False)
        table.to_csv(args.out / "plan.csv", index=False)
        (args.out / "plan.md").write_text(text)
        meta = base_metadata(
            "sweep-plan",
            {
                "folder": str(args.folder),
                "networks": args.networks,
                "timeouts": args.timeouts,
                "build_s": args.build_s,
                "draws": args.draws,
            },
        )
        write_json(args.out / "metadata.json", meta)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
