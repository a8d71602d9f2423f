"""Experiment 2 with paths that change over time (``[[schedule]]``, e.g. ``outage``): page load time
against load start, per strategy, outages shaded; and the report of what each strategy did.

``python -m analysis.outage2 FOLDER`` writes ``outage.png``/``.pdf`` and ``report.md`` (``make plots``
does it for every such folder; the panels are ``analysis.outage``'s). The report gives, per phase of
the schedule (each path up or down), the loads, failures, median load time and which path the
loads' connections were set up on, and states issue 14's acceptance figures: whether ``mptcp``
failed or stalled while the default path (LTE, path 1) was down, how many loads RobE_IPS needed
in an outage of the path it prefers before all its connections went over the other path, how
long after the recovery it came back, and whether RobE_IPS+TIMER (and SIM) ever failed.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import cost, style
from analysis.outage import cli, draw_panels, per_phase, save_report
from analysis.schema import EXPERIMENT2
from analysis.schema import read_runs as read_schema_runs
from analysis.tables import markdown
from experiments.path_schedule import PathState, Timeline, parse_changes
from robe.ips import HistoryConfig

#: A load "stalls" when it takes this many times its strategy's median before the first outage.
STALL_FACTOR = 2.0
PATH_NAMES = {1: "LTE", 2: "DSL"}


def timeline_of(profile: dict[str, Any]) -> Timeline:
    """The schedule of a stored experiment 2 profile (metadata.json's ``profile``)."""
    initial = (PathState(0.0, float(profile["lte"]["rtt_ms"])), PathState(0.0, float(profile["dsl"]["rtt_ms"])))
    return Timeline(parse_changes(list(profile.get("schedule", []))), float(profile["duration_s"]),
                    float(profile["interval_s"]), initial)  # fmt: skip


def paths_used(winner_paths: Any) -> dict[int, int]:
    """``1:2;2:3`` (runs.csv's ``winner_paths``) -> {path: connections set up over it}."""
    if not isinstance(winner_paths, str) or not winner_paths:
        return {}
    used: dict[int, int] = {}
    for item in winner_paths.split(";"):
        path, _, count = item.partition(":")
        if path.isdigit() and count.isdigit():
            used[int(path)] = used.get(int(path), 0) + int(count)
    return used


def read_runs(folder: Path) -> pd.DataFrame:
    """runs.csv of a time-varying experiment 2 run: ``start_s`` the load's start, ``on_path1`` and
    ``on_path2`` its connections set up over each path."""
    runs = read_schema_runs(folder, EXPERIMENT2).drop_duplicates("run_id", keep="last")
    used = runs["winner_paths"].map(paths_used)
    runs = runs.assign(
        start_s=runs["load_start_s"].fillna(runs["due_s"]),
        on_path1=used.map(lambda u: u.get(1, 0)),
        on_path2=used.map(lambda u: u.get(2, 0)),
    )
    return runs.sort_values(["repetition", "strategy", "start_s"]).reset_index(drop=True)


def phases(timeline: Timeline) -> list[tuple[float, float, str]]:
    """The schedule cut at every change: (start, end, what the paths were), e.g. ``LTE down``."""
    cuts = sorted({0.0, timeline.duration_s, *(c.at_s for c in timeline.changes)})
    spans = []
    for start, end in itertools.pairwise(cuts):
        down = [PATH_NAMES[p] for p in (1, 2) if timeline.state_at(p, start).loss_pct >= 100]
        spans.append((start, end, f"{start:g}-{end:g} s: " + (" and ".join(down) + " down" if down else "both up")))
    return spans


def render_figure(runs: pd.DataFrame, profile: dict[str, Any], folder: Path) -> list[Path]:
    """Page load time against load start, one panel per strategy, LTE's and DSL's outages shaded."""
    timeline = timeline_of(profile)
    windows = {1: timeline.windows(1), 2: timeline.windows(2)}
    fig = draw_panels(runs, y="load_ms", ylabel="page load [ms]", windows=windows, hlines=[], floor=100.0,
                      failed_y="wget_ms",
                      title=f"experiment 2, {profile['name']}: page load time (wget) against its start, "
                            f"{runs.repetition.nunique()} repetitions (shades)",
                      xlabel="load start [s]; shaded grey: LTE (default path) at 100 % loss, purple: DSL at 100 % loss;"
                             " x: failed load, at the time wget tried")  # fmt: skip
    return style.save(fig, folder / "outage")


def phase_table(runs: pd.DataFrame, timeline: Timeline) -> pd.DataFrame:
    """Per strategy and phase: loads, failures, median and p90 load time, connections per path."""
    spans = phases(timeline)
    labels = [label for _, _, label in spans]
    bins = [spans[0][0], *(end for _, end, _ in spans)]
    bins[-1] = float("inf")
    phase = pd.cut(runs.start_s, bins, right=False, labels=labels)
    return per_phase(runs, phase, 0, loads=("run_id", "size"), failed=("status", lambda s: int((s != "ok").sum())),
                     median_load_ms=("load_ms", "median"), p90_load_ms=("load_ms", lambda s: s.quantile(0.9)),
                     conns_on_LTE=("on_path1", "sum"), conns_on_DSL=("on_path2", "sum"))  # fmt: skip


def ips_in_outage(group: pd.DataFrame, start: float, end: float, down: int) -> dict[str, Any]:
    """How one repetition of RobE_IPS met an outage of path ``down`` (loads started in it, and after)."""
    other = 3 - down
    during = group[(group.start_s >= start) & (group.start_s < end)]
    clean = (during.status == "ok") & (during[f"on_path{down}"] == 0) & (during[f"on_path{other}"] > 0)
    bad = [i for i, good in enumerate(clean.tolist()) if not good]
    # Settled: a clean load came after the last bad one (None: it never settled within the outage).
    settled = 0 if not bad else (bad[-1] + 1 if bad[-1] + 1 < len(during) else None)
    after = group[group.start_s >= end]
    back = after[(after.status == "ok") & (after[f"on_path{down}"] > 0)]
    return {
        "loads_in_outage": len(during),
        "failed_in_outage": int((during.status != "ok").sum()),
        "loads_before_settled": settled,
        "back_after_s": None if back.empty else round(float(back.start_s.iloc[0] - end), 1),
    }


def acceptance(runs: pd.DataFrame, timeline: Timeline) -> tuple[list[dict[str, Any]], list[tuple[str, bool, str]]]:
    """Per (strategy, repetition, outage) figures, and issue 14's checks as (what, passed, figures)."""
    rows: list[dict[str, Any]] = []
    checks: list[tuple[str, bool, str]] = []
    first = min((s for p in (1, 2) for s, _ in timeline.windows(p)), default=timeline.duration_s)
    for path in (1, 2):
        for start, end in timeline.windows(path):
            name = f"{PATH_NAMES[path]} down {start:g}-{end:g} s"
            for (strategy, rep), group in runs.groupby(["strategy", "repetition"]):
                rows.append({"strategy": strategy, "repetition": rep, "outage": name,
                             **ips_in_outage(group, start, end, path)})  # fmt: skip
            mptcp = runs[runs.strategy == "mptcp"]
            if path == 1 and not mptcp.empty:
                before = mptcp[(mptcp.start_s < first) & (mptcp.status == "ok")].load_ms.median()
                during = mptcp[(mptcp.start_s >= start) & (mptcp.start_s < end)]
                hurt = (during.status != "ok") | (during.load_ms > STALL_FACTOR * before)
                times = sorted(during.load_ms.dropna().round(0).astype(int).tolist())
                checks.append((f"mptcp fails or stalls (> {STALL_FACTOR:g} x its median before, {before:.0f} ms) "
                               f"in every load started while {name}", bool(len(during)) and bool(hurt.all()),
                               f"{int((during.status != 'ok').sum())} failed, {int(hurt.sum())} of {len(during)} "
                               f"failed or stalled; ok loads' times {times} ms"))  # fmt: skip
            ips = [r for r in rows if r["strategy"] == "robe-ips" and r["outage"] == name]
            if ips and path == 2:  # the path RobE_IPS prefers (the lower RTT) goes down
                settled = [r["loads_before_settled"] for r in ips]
                checks.append((f"robe-ips: every load after at most 3 in the outage ({name}) sets up all its "
                               "connections over LTE", all(n is not None and n <= 3 for n in settled),
                               f"loads before settling per repetition: {settled}"))  # fmt: skip
                backs = [r["back_after_s"] for r in ips]
                hold = HistoryConfig().failure_hold_s
                checks.append((f"robe-ips: back on DSL within its failure hold ({hold:g} s, doubled per consecutive "
                               "failure) of the recovery", all(b is not None and b <= hold for b in backs),
                               f"seconds after recovery per repetition: {backs}"))  # fmt: skip
    for strategy in ("robe-ips-timer", "robe-sim"):
        mine = runs[runs.strategy == strategy]
        if not mine.empty:
            checks.append((f"{strategy} never fails", bool((mine.status == "ok").all()),
                           f"{int((mine.status != 'ok').sum())} of {len(mine)} loads failed"))  # fmt: skip
    return rows, checks


def write_report(folder: Path) -> Path:
    """report.md of a time-varying experiment 2 folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    profile = metadata["profile"]
    timeline = timeline_of(profile)
    runs = read_runs(folder)
    rows, checks = acceptance(runs, timeline)
    passes = metadata.get("passes", {})
    skipped = sum(int(p.get("skipped", 0)) for p in passes.values())
    lines = [
        f"# Experiment 2, time-varying profile `{profile['name']}`",
        "",
        profile.get("description", ""),
        "",
        f"Commit {metadata.get('git', {}).get('commit', '?')[:10]}, {len(runs)} page loads "
        f"({', '.join(profile['sites'])} in turn), {runs.repetition.nunique()} repetitions; LTE (path 1, the "
        f"default) {profile['lte']['rtt_ms']} ms, DSL (path 2) {profile['dsl']['rtt_ms']} ms RTT; outages: LTE "
        f"{timeline.windows(1)} s, DSL {timeline.windows(2)} s. A load due every {timeline.interval_s:g} s; "
        f"{skipped} due times fell while the strategy's previous load was still running and were skipped. "
        "Load time = first connection accepted by the client proxy -> wget's last connection ended; a failed "
        "load (x) is one wget gave up on (its read timeout is 30 s) or that missed objects.",
        "",
        "## Acceptance",
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {what}: {figures}" for what, ok, figures in checks],
        "",
        "## Per phase",
        "",
        markdown(phase_table(runs, timeline)),
        "",
        *cost.report_lines(runs, ["strategy"]),
        "## Around each outage, per repetition",
        "",
        "`loads_before_settled`: loads started in the outage before every later one in it was ok with all its "
        "connections over the other path (empty: no such later load, it never settled); `back_after_s`: the "
        "first load after the recovery with a connection over the path that was down.",
        "",
        markdown(pd.DataFrame(rows).set_index("strategy") if rows else pd.DataFrame()),
        "",
    ]
    return save_report(folder, lines)


def render(folder: Path) -> list[Path]:
    """Figure and report of one folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    return [*render_figure(read_runs(folder), metadata["profile"], folder), write_report(folder)]


def main(argv: list[str] | None = None) -> int:
    """Entry point: render the given folders."""
    return cli(render, "python -m analysis.outage2", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
