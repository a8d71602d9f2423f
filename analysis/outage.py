"""Time-varying runs (experiment 1 with a ``[[schedule]]``, e.g. ``outage``): set-up time against
attempt start, per strategy, outage shaded; and the report of what each strategy did around it.

``python -m analysis.outage FOLDER`` writes ``outage.png``/``.pdf`` and ``report.md`` (``make plots``
does it for every such folder). The report states, per repetition, the acceptance figures of
issue 14: how many connections RobE_IPS needed after the outage began before its set-ups stayed at
the other path's 1.5 x RTT, how long after the recovery it returned to the default path, whether
RobE_IPS+TIMER ever failed, and whether ``mptcp`` failed where every SYN met the outage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from analysis import cost, style
from analysis.ownership import hand_to_invoking_user
from analysis.schema import EXPERIMENT1
from analysis.schema import read_runs as read_schema_runs
from analysis.tables import markdown
from robe.ips import HistoryConfig

#: A set-up "at 1.5 x RTT" of a path: within this much of it (the testbed's own cost is ~1 ms).
SETUP_SLACK_MS = 5.0


def read_runs(folder: Path) -> pd.DataFrame:
    """runs.csv of a time-varying run (``analysis.schema.EXPERIMENT1``): the last row of each run id
    (an error row is rerun on resume), ``start_s`` the attempt's start (its due time if not recorded)."""
    runs = read_schema_runs(folder, EXPERIMENT1).drop_duplicates("run_id", keep="last")
    runs = runs.assign(
        winner_path=runs["winner_path"].astype("float64"),  # NaN where no winner, for plain comparisons
        start_s=runs["attempt_start_s"].fillna(runs["due_s"]),
    )
    return runs.sort_values(["repetition", "strategy", "start_s"]).reset_index(drop=True)


def ordered_strategies(runs: pd.DataFrame) -> list[str]:
    """The folder's strategies in the legend order of every figure."""
    return style.ordered(runs["strategy"].unique())


def outage_windows(profile: dict[str, Any], path: int = 1) -> list[tuple[float, float]]:
    """When ``path`` is at 100 % loss, from the profile's schedule."""
    from experiments.profile import parse_profile

    timeline = parse_profile(dict(profile)).timeline()
    return [] if timeline is None else timeline.windows(path)


def syn_offsets_s(profile: dict[str, Any]) -> list[float]:
    """When a plain connect sends its SYNs, from its start (back-off 1, 2, 4 ... s)."""
    retries = profile.get("tcp_syn_retries") or 6
    return [float(2**k - 1) for k in range(retries + 1)]


def ips_recovery(group: pd.DataFrame, start: float, end: float, rtt1: float, rtt2: float) -> dict[str, Any]:
    """How one repetition of an IPS strategy met one outage (start, end in s)."""
    during = group[(group.start_s >= start) & (group.start_s < end)]
    fast_other = (during.status == "ok") & (during.setup_ms <= 1.5 * rtt2 + SETUP_SLACK_MS) & (during.winner_path == 2)
    # The connections before the set-ups settle on the other path for good (to the end of the outage).
    bad = [i for i, good in enumerate(fast_other.tolist()) if not good]
    settled_after = bad[-1] + 1 if bad else 0
    after = group[group.start_s >= end]
    back = after[(after.status == "ok") & (after.winner_path == 1) & (after.setup_ms <= 1.5 * rtt1 + SETUP_SLACK_MS)]
    return {
        "in_outage": len(during),
        "slow_or_failed_in_outage": int((~fast_other).sum()),
        "connections_before_settled": settled_after,
        "failed_in_outage": int((during.status != "ok").sum()),
        "back_on_path1_after_s": None if back.empty else round(float(back.start_s.iloc[0] - end), 2),
        "median_setup_in_outage_ms": None if during.empty else round(float(during.setup_ms.median()), 1),
    }


#: Shade of an outage of path 1 (grey, the colour of plain TCP) and of path 2 (purple, no strategy's
#: colour); experiment 2's schedules have both.
OUTAGE_SHADES: dict[int, Any] = {1: style.color("tcp"), 2: (0.48, 0.2, 0.58)}


def draw_panels(
    runs: pd.DataFrame,
    *,
    y: str,
    ylabel: str,
    windows: dict[int, list[tuple[float, float]]],
    hlines: list[tuple[float, str]],
    title: str,
    xlabel: str,
    floor: float = 10.0,
    failed_y: str | None = None,
) -> Any:
    """One panel per strategy of ``y`` against ``start_s`` (its colour and marker, one shade per
    repetition), each path's outages shaded, loads or attempts that did not succeed as crosses (at
    their ``failed_y``, e.g. how long the client tried, or on top without one), reference lines
    ``hlines`` ((value, label)); the figure (shared by both experiments)."""
    strategies = ordered_strategies(runs)
    style.apply_theme()
    fig, axes = plt.subplots(len(strategies), 1, figsize=(style.TWO_COLUMN_IN, 1.25 * len(strategies) + 0.6),
                             sharex=True, sharey=True, squeeze=False)  # fmt: skip
    ok = runs[runs.status == "ok"]
    top = max(float(ok[y].max()) * 1.5 if not ok.empty else 1000.0, 2000.0)
    if failed_y is not None and runs[runs.status != "ok"][failed_y].notna().any():
        top = max(top, float(runs[runs.status != "ok"][failed_y].max()) * 1.5)
    reps = [str(r) for r in sorted(runs.repetition.unique())]
    for ax, strategy in zip(axes[:, 0], strategies, strict=True):
        for path, spans in windows.items():
            for start, end in spans:
                ax.axvspan(start, end, color=OUTAGE_SHADES[path], alpha=0.18, lw=0)
        mine = runs[runs.strategy == strategy]
        shades = sns.dark_palette(style.color(strategy), n_colors=len(reps) + 1, reverse=True)[: len(reps)]
        sns.scatterplot(data=mine[mine.status == "ok"].assign(rep=lambda d: d.repetition.astype(str)), x="start_s",
                        y=y, hue="rep", hue_order=reps, palette=shades, marker=style.marker(strategy), s=14,
                        ax=ax, legend=False, edgecolor="none")  # fmt: skip
        failed = mine[mine.status != "ok"]
        crosses = failed[failed_y].fillna(top * 0.8) if failed_y is not None else [top * 0.8] * len(failed)
        ax.scatter(failed.start_s, crosses, marker="x", color="black", s=14, lw=0.8)
        lowest = min((value for value, _ in hlines), default=None)
        for value, label in hlines:
            ax.axhline(value, color="grey", lw=0.6, ls=":")
            # The lowest line's label below it, the others above: 1.5 x 20 and 1.5 x 40 ms lie close
            # on a log axis, and two labels above their lines overlapped.
            ax.text(0.995, value, label, fontsize=5.5, va="top" if value == lowest else "bottom", ha="right",
                    color="grey", transform=ax.get_yaxis_transform())  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylim(floor, top)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{strategy}  ({int((mine.status != 'ok').sum())} of {len(mine)} failed: x)", loc="left")
        style.frame_label(ax.title, strategy)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def render_figure(runs: pd.DataFrame, profile: dict[str, Any], folder: Path) -> list[Path]:
    """Set-up time against attempt start, one panel per strategy, path 1's outages shaded."""
    rtt1, rtt2 = float(profile["path1"]["rtt_ms"]), float(profile["path2"]["rtt_ms"])
    fig = draw_panels(runs, y="setup_ms", ylabel="set-up [ms]", windows={1: outage_windows(profile)},
                      hlines=[(1.5 * rtt1, "1.5 x RTT path 1"), (1.5 * rtt2, "1.5 x RTT path 2")],
                      title=f"{profile['name']}: connect() -> first request bytes at the server, "
                            f"{runs.repetition.nunique()} repetitions (shades)",
                      xlabel="attempt start [s] (shaded: path 1 at 100 % loss)")  # fmt: skip
    return style.save(fig, folder / "outage")


def acceptance(runs: pd.DataFrame, profile: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[str, bool, str]]]:
    """Per (strategy, repetition) figures around each outage, and the issue's acceptance checks."""
    rtt1, rtt2 = float(profile["path1"]["rtt_ms"]), float(profile["path2"]["rtt_ms"])
    rows: list[dict[str, Any]] = []
    checks: list[tuple[str, bool, str]] = []
    windows = outage_windows(profile)
    offsets = syn_offsets_s(profile)
    for start, end in windows:
        for (strategy, rep), group in runs.groupby(["strategy", "repetition"]):
            row = {"strategy": strategy, "repetition": rep, "outage": f"{start:g}-{end:g} s"}
            row.update(ips_recovery(group, start, end, rtt1, rtt2))
            rows.append(row)
        ips = [r for r in rows if r["strategy"] == "robe-ips" and r["outage"] == f"{start:g}-{end:g} s"]
        if ips:
            settled = [r["connections_before_settled"] for r in ips]
            target = f"path 2's 1.5 x RTT ({1.5 * rtt2:g} ms + {SETUP_SLACK_MS:g})"
            checks.append((f"robe-ips: set-ups stay at {target} through the outage after at most 3 connections",
                           max(settled) <= 3, f"connections before settling per repetition: {settled}"))  # fmt: skip
            backs = [r["back_on_path1_after_s"] for r in ips]
            limit = HistoryConfig().failure_hold_s  # the documented ageing of a failure
            ok = all(b is not None and b <= limit for b in backs)
            checks.append((f"robe-ips: back on path 1 at 1.5 x RTT within the failure hold ({limit:g} s) of the "
                           "recovery", ok, f"seconds after recovery: {backs}"))  # fmt: skip
        mptcp = runs[(runs.strategy == "mptcp")]
        doomed = mptcp[[all(start <= s + o < end for o in offsets) for s in mptcp.start_s]]
        if not doomed.empty:
            checks.append((f"mptcp: every attempt whose SYNs (at {', '.join(f'{o:g}' for o in offsets)} s) all fall "
                           "in the outage fails", bool((doomed.status != "ok").all()),
                           f"{int((doomed.status != 'ok').sum())} of {len(doomed)} failed"))  # fmt: skip
    timer = runs[runs.strategy == "robe-ips-timer"]
    if not timer.empty:
        checks.append(("robe-ips-timer never fails", bool((timer.status == "ok").all()),
                       f"{int((timer.status != 'ok').sum())} of {len(timer)} failed"))  # fmt: skip
    return rows, checks


def phase_table(runs: pd.DataFrame, profile: dict[str, Any]) -> pd.DataFrame:
    """Per strategy and phase (before, during, after the first outage): attempts, failures, set-up."""
    windows = outage_windows(profile)
    start, end = windows[0] if windows else (float("inf"), float("inf"))
    phase = pd.cut(runs.start_s, [-1, start, end, float("inf")], right=False, labels=["before", "during", "after"])
    return per_phase(runs, phase, 1, attempts=("run_id", "size"),
                     failed=("status", lambda s: int((s != "ok").sum())),
                     median_setup_ms=("setup_ms", "median"), p90_setup_ms=("setup_ms", lambda s: s.quantile(0.9)),
                     on_path2=("winner_path", lambda s: int((s == 2).sum())))  # fmt: skip


def per_phase(runs: pd.DataFrame, phase: pd.Series, digits: int, **aggregations: Any) -> pd.DataFrame:
    """``aggregations`` (pandas named aggregations) of ``runs`` per strategy and ``phase`` (a label per row),
    strategies in the figures' order, rounded to ``digits``."""
    table: pd.DataFrame = runs.assign(phase=phase).groupby(["strategy", "phase"], observed=True).agg(**aggregations)
    order = style.ordered(table.index.get_level_values(0))
    return table.reindex(order, level=0).round(digits).reset_index().set_index("strategy")


def write_report(folder: Path) -> Path:
    """report.md of a time-varying folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    profile = metadata["profile"]
    runs = read_runs(folder)
    rows, checks = acceptance(runs, profile)
    lines = [
        f"# Experiment 1, time-varying profile `{profile['name']}`",
        "",
        profile.get("description", ""),
        "",
        f"Commit {metadata.get('git', {}).get('commit', '?')[:10]}, "
        f"{len(runs)} attempts, {runs.repetition.nunique()} repetitions; paths {profile['path1']['rtt_ms']} / "
        f"{profile['path2']['rtt_ms']} ms RTT; outages of path 1: {outage_windows(profile)} s. "
        "Set-up = connect() -> first request bytes at the server.",
        "",
        "## Acceptance",
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {what}: {figures}" for what, ok, figures in checks],
        "",
        "## Per phase",
        "",
        markdown(phase_table(runs, profile)),
        "",
        *cost.report_lines(runs, ["strategy"]),
        "## Around the outage, per repetition",
        "",
        "`connections_before_settled`: connections started in the outage before every later one in it set up on "
        f"path 2 within {SETUP_SLACK_MS:g} ms of its 1.5 x RTT; `back_on_path1_after_s`: the first attempt after "
        "the recovery that set up on path 1 at its 1.5 x RTT.",
        "",
        markdown(pd.DataFrame(rows).set_index("strategy") if rows else pd.DataFrame()),
        "",
    ]
    return save_report(folder, lines)


def save_report(folder: Path, lines: list[str]) -> Path:
    """Write ``lines`` as the folder's report.md (the invoking user's); its path."""
    report = folder / "report.md"
    report.write_text("\n".join(lines))
    hand_to_invoking_user(report)
    return report


def render(folder: Path) -> list[Path]:
    """Figure and report of one folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    return [*render_figure(read_runs(folder), metadata["profile"], folder), write_report(folder)]


def cli(render_folder: Callable[[Path], list[Path]], prog: str, description: str, argv: list[str] | None) -> int:
    """The command line of both time-varying analyses: render the given folders, print their reports."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for folder in args.folders:
        files = render_folder(folder)
        print(f"{folder}: wrote {', '.join(f.name for f in files)}")
        print((folder / "report.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: render the given folders."""
    return cli(render, "python -m analysis.outage", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
