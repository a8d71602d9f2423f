"""``make compare RUNS="DIR1 DIR2 ..."``: two or more result folders of the same experiment side by side.

Like Flent's multi-file plots: the first folder is the reference. For every cell the folders share
((strategy, loss) for experiment 1, (site, strategy) for experiment 2) it tests whether each other
folder differs from the reference: the difference of the means with its 95 % bootstrap CI, a
two-sided Mann-Whitney U test of the times, and Fisher's exact test of the failure counts; the
p-values of all tests are adjusted together for the false discovery rate (Benjamini-Hochberg, q).
It also lists the metadata that differ (commit, kernel, link backend, measured RTTs, every profile
field, tool versions). Output, in the folder it names (default ``results/compare/<labels>``):
``compare.png``/``.pdf`` (the folders overlaid: one line style per folder, one colour per strategy),
``compare.csv`` (every test), ``compare.md`` (metadata diff and tables); the metadata diff and the
table of the chosen metric are printed.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from scipy import stats as scipy_stats

from analysis.experiment1_cells import DEFAULT_METRIC, METRIC_LABELS, METRICS
from analysis.ownership import hand_to_invoking_user, make_results_dir
from analysis.schema import FINAL_STATUSES, SchemaError, read_runs, schema_of
from analysis.stats import bootstrap_difference_ci, bootstrap_mean_ci
from analysis.style import TWO_COLUMN_IN, apply_theme, color, legend_name, ordered, save, style
from robe_lab.cliparse import command_parser
from robe_lab.paths import results_dir

RESULTS = results_dir()
#: Legend columns under the two-column figures (labels up to about 30 characters fit).
LEGEND_COLUMNS = 4
#: Line style and marker fill per folder (reference first).
RUN_STYLES: tuple[tuple[Any, bool], ...] = (
    ("-", True),
    ((0, (4, 2)), False),
    ((0, (1, 1.5)), True),
    ((0, (5, 1, 1, 1)), False),
)
FDR = 0.05


class CompareError(ValueError):
    """The folders cannot be compared; the message says why."""


@dataclass(frozen=True)
class Run:
    """One result folder: its label, metadata and typed rows."""

    label: str
    folder: Path
    metadata: dict[str, Any]
    runs: pd.DataFrame


def _label(folder: Path) -> str:
    resolved = folder.resolve()
    try:
        return str(resolved.relative_to(RESULTS))
    except ValueError:
        return resolved.name


def load_runs(folders: list[Path]) -> tuple[str, list[Run]]:
    """(kind, runs) of the folders; CompareError unless there are two or more of one experiment."""
    if len(folders) < 2:
        raise CompareError('give two or more result folders: make compare RUNS="DIR1 DIR2 ..."')
    loaded, kinds = [], set()
    for folder in folders:
        if not (folder / "runs.csv").exists() or not (folder / "metadata.json").exists():
            raise CompareError(f"{folder}: not a result folder (needs runs.csv and metadata.json)")
        metadata = json.loads((folder / "metadata.json").read_text())
        kinds.add(metadata.get("kind", "experiment1"))
        loaded.append(Run(_label(folder), folder, metadata, read_runs(folder, schema_of(folder))))
    if len(kinds) > 1:
        raise CompareError(f"the folders hold different experiments ({', '.join(sorted(kinds))})")
    labels = [r.label for r in loaded]
    if len(set(labels)) < len(labels):
        loaded = [Run(f"{r.label}#{i + 1}", r.folder, r.metadata, r.runs) for i, r in enumerate(loaded)]
    return kinds.pop(), loaded


# ---------------------------------------------------------------------------------------------
# Metadata.


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        return {prefix: ", ".join(map(str, value))}
    return {prefix: str(value)}


def comparable_metadata(run: Run) -> dict[str, str]:
    """The metadata fields worth comparing, flattened to dotted keys."""
    meta = run.metadata
    fields = {
        "git.commit": str(meta.get("git", {}).get("commit")),
        "git.dirty": str(meta.get("git", {}).get("dirty")),
        "kernel": str(meta.get("network", {}).get("kernel") or meta.get("kernel")),
        "link_backend": str(meta.get("link_backend", {}).get("backend", meta.get("network", {}).get("link_backend"))),
        "complete": str(meta.get("complete")),
        "rows": str(len(run.runs)),
    }
    fields.update(_flatten(meta.get("profile", {}), "profile"))
    fields.pop("profile.description", None)
    invocations = meta.get("invocations", [])
    if invocations:
        fields.update(_flatten(invocations[-1].get("tools", {}), "tools"))
        reports = [r for inv in invocations for r in (inv.get("preflight") or {}).values()]
        for path in ("path1", "path2"):
            values = [r[path]["p50_ms"] for r in reports if path in r]
            if values:
                fields[f"measured_rtt_ms.{path}"] = f"{np.mean(values):.2f}"
    sysctls = meta.get("network", {}).get("sysctls", {}).get("client", {})
    fields.update({f"sysctl.client.{k}": str(v) for k, v in sysctls.items()})
    return fields


def metadata_diff(runs: list[Run]) -> pd.DataFrame:
    """One row per metadata field whose value differs between the folders (missing shown as –)."""
    flat = [comparable_metadata(r) for r in runs]
    keys = sorted({k for f in flat for k in f})
    rows = [{"field": k, **{r.label: f.get(k, "–") for r, f in zip(runs, flat, strict=True)}} for k in keys
            if len({f.get(k, "–") for f in flat}) > 1]  # fmt: skip
    return pd.DataFrame(rows, columns=["field", *[r.label for r in runs]])


# ---------------------------------------------------------------------------------------------
# Cell tests.


def _cell_keys(kind: str) -> tuple[list[str], str]:
    return (["site", "strategy"], "load_ms") if kind == "experiment2" else (["strategy", "loss_pct"], "")


def cell_tests(kind: str, runs: list[Run], metrics: list[str]) -> pd.DataFrame:
    """Every (cell, metric, other folder) against the reference folder."""
    keys, _ = _cell_keys(kind)
    columns = {"load": "load_ms"} if kind == "experiment2" else {m: METRICS[m] for m in metrics}
    reference = runs[0]
    rows: list[dict[str, Any]] = []
    final = [r.runs[r.runs["status"].isin(FINAL_STATUSES)] for r in runs]
    cells = sorted({tuple(k) for f in final for k in f[keys].itertuples(index=False)},
                   key=lambda k: tuple(str(v) if isinstance(v, str) else f"{v:012.3f}" for v in k))  # fmt: skip
    for metric, column in columns.items():
        for cell in cells:
            ref = _select(final[0], keys, cell)
            for other, data in zip(runs[1:], final[1:], strict=True):
                mine = _select(data, keys, cell)
                if ref.empty or mine.empty:
                    continue
                rows.append({**dict(zip(keys, cell, strict=True)), "metric": metric, "reference": reference.label,
                             "other": other.label, **_test(ref, mine, column)})  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    pvalues = table[["p_times", "p_failures"]].to_numpy().ravel()
    valid = ~np.isnan(pvalues)
    qvalues = np.full(pvalues.shape, math.nan)
    if valid.any():
        qvalues[valid] = scipy_stats.false_discovery_control(pvalues[valid], method="bh")
    table["q_times"], table["q_failures"] = qvalues[0::2], qvalues[1::2]
    table["differs"] = (table["q_times"] < FDR) | (table["q_failures"] < FDR)
    return table


def _select(data: pd.DataFrame, keys: list[str], cell: tuple[Any, ...]) -> pd.DataFrame:
    mask = np.ones(len(data), dtype=bool)
    for key, value in zip(keys, cell, strict=True):
        mask &= (data[key] == value).to_numpy(dtype=bool)
    return data[mask]


def _test(ref: pd.DataFrame, other: pd.DataFrame, column: str) -> dict[str, Any]:
    a = ref.loc[ref["status"] == "ok", column].to_numpy(dtype=float)
    b = other.loc[other["status"] == "ok", column].to_numpy(dtype=float)
    fail_a, fail_b = len(ref) - a.size, len(other) - b.size
    out: dict[str, Any] = {
        "n_ref": len(ref), "ok_ref": a.size, "n_other": len(other), "ok_other": b.size,
        "mean_ref": a.mean() if a.size else math.nan, "mean_other": b.mean() if b.size else math.nan,
        "median_ref": float(np.median(a)) if a.size else math.nan,
        "median_other": float(np.median(b)) if b.size else math.nan,
        "diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "p_times": math.nan,
    }  # fmt: skip
    if a.size and b.size:
        out["diff"], out["diff_ci_low"], out["diff_ci_high"] = bootstrap_difference_ci(a, b)
        if np.unique(np.concatenate([a, b])).size > 1:
            out["p_times"] = float(scipy_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    table = [[a.size, fail_a], [b.size, fail_b]]
    out["p_failures"] = float(scipy_stats.fisher_exact(table).pvalue) if fail_a or fail_b else math.nan
    return out


# ---------------------------------------------------------------------------------------------
# The overlay figure.


def _summary(kind: str, run: Run, column: str) -> pd.DataFrame:
    keys, _ = _cell_keys(kind)
    final = run.runs[run.runs["status"].isin(FINAL_STATUSES)]
    rows = []
    for cell, group in final.groupby(keys, sort=True):
        times = group.loc[group["status"] == "ok", column].to_numpy(dtype=float)
        mean, low, high = bootstrap_mean_ci(times) if times.size else (math.nan,) * 3
        rows.append({**dict(zip(keys, cell, strict=True)), "mean": mean, "low": low, "high": high,
                     "failed": 100 * (len(group) - times.size) / len(group)})  # fmt: skip
    return pd.DataFrame(rows)


def plot_experiment1(runs: list[Run], metrics: list[str], stem: Path) -> list[Path]:
    """Mean set-up time per (strategy, loss) for each folder (line style) and metric (column), failures below."""
    apply_theme()
    strategies = ordered({s for r in runs for s in r.runs["strategy"]})
    fig, axes = plt.subplots(2, len(metrics), figsize=(TWO_COLUMN_IN, 4.4), sharex=True, squeeze=False,
                             layout="constrained", gridspec_kw={"height_ratios": [2.2, 1]})  # fmt: skip
    for col, metric in enumerate(metrics):
        top, bottom = axes[0][col], axes[1][col]
        for k, run in enumerate(runs):
            line, filled = RUN_STYLES[k % len(RUN_STYLES)]
            summary = _summary("experiment1", run, METRICS[metric])
            for strategy in strategies:
                mine = summary[summary["strategy"] == strategy]
                if mine.empty:
                    continue
                c, marker = color(strategy), style(strategy).marker
                face = c if filled else "white"
                shown = mine.dropna(subset=["mean"])
                top.plot(shown["loss_pct"], shown["mean"], color=c, linestyle=line, marker=marker,
                         markerfacecolor=face, markeredgecolor=c, markeredgewidth=0.7)  # fmt: skip
                banded = shown.dropna(subset=["low", "high"])
                top.fill_between(banded["loss_pct"], banded["low"], banded["high"], color=c, alpha=0.08, linewidth=0)
                bottom.plot(mine["loss_pct"], mine["failed"], color=c, linestyle=line, marker=marker,
                            markerfacecolor=face, markeredgecolor=c, markeredgewidth=0.7, markersize=3)  # fmt: skip
        top.set_yscale("log")
        top.set_title(METRIC_LABELS[metric], pad=3)
        top.set_ylabel("set-up time [ms]\n(mean, 95 % CI)" if col == 0 else "")
        bottom.set_ylabel("failed [%]" if col == 0 else "")
        bottom.set_ylim(-5, 105)
        bottom.set_xlabel("packet loss on the default path [%]")
    _legend(fig, strategies, runs)
    return save(fig, stem)


def plot_experiment2(runs: list[Run], stem: Path) -> list[Path]:
    """Mean load time (95 % CI) per site: colour = strategy, marker fill and offset = folder."""
    apply_theme()
    strategies = ordered({s for r in runs for s in r.runs["strategy"]})
    sites = list(dict.fromkeys(s for r in runs for s in r.runs["site"]))
    slots = [(s, k) for s in strategies for k in range(len(runs))]
    site_in = max(0.35, 0.05 * len(slots))  # every (strategy, folder) point of a site apart
    legend_in = 0.3 * math.ceil((len(strategies) + len(runs)) / LEGEND_COLUMNS)
    fig, ax = plt.subplots(figsize=(TWO_COLUMN_IN, site_in * len(sites) + 0.8 + legend_in), layout="constrained")
    for k, run in enumerate(runs):
        summary = _summary("experiment2", run, "load_ms")
        filled = RUN_STYLES[k % len(RUN_STYLES)][1]
        for strategy in strategies:
            mine = summary[(summary["strategy"] == strategy) & summary["mean"].notna()]
            if mine.empty:
                continue
            offset = (slots.index((strategy, k)) - (len(slots) - 1) / 2) * 0.8 / len(slots)
            y = mine["site"].map(sites.index) + offset
            c = color(strategy)
            ax.errorbar(mine["mean"] / 1000, y, xerr=[(mine["mean"] - mine["low"]) / 1000,
                                                     (mine["high"] - mine["mean"]) / 1000],
                        color=c, marker=style(strategy).marker, markerfacecolor=c if filled else "white",
                        markeredgecolor=c, linestyle="none", elinewidth=0.7, markersize=3.5)  # fmt: skip
    ax.set_yticks(range(len(sites)))
    ax.set_yticklabels(sites)
    ax.set_ylim(len(sites) - 0.5, -0.5)
    ax.set_xlabel("page load time [s] (mean, 95 % CI)")
    _legend(fig, strategies, runs)
    return save(fig, stem)


def _legend(fig: Any, strategies: list[str], runs: list[Run]) -> None:
    handles = [Line2D([], [], color=color(s), marker=style(s).marker, markeredgewidth=0, label=legend_name(s))
               for s in strategies]  # fmt: skip
    for k, run in enumerate(runs):
        line, filled = RUN_STYLES[k % len(RUN_STYLES)]
        handles.append(Line2D([], [], color="0.3", linestyle=line, marker="o", markerfacecolor="0.3" if filled else
                              "white", markeredgecolor="0.3", label=run.label))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), LEGEND_COLUMNS), handlelength=2.2,
               labelspacing=0.6)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Output.


def default_out(runs: list[Run]) -> Path:
    """results/compare/<label1>--<label2>... (labels made file-name safe)."""
    name = "--".join(re.sub(r"[^A-Za-z0-9._-]+", "_", r.label) for r in runs)
    return RESULTS / "compare" / name[:150]


def _fmt(value: Any, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def printable(tests: pd.DataFrame, kind: str, metric: str) -> pd.DataFrame:
    """The test table of one metric, formatted for the terminal and compare.md."""
    mine = tests[tests["metric"] == metric] if not tests.empty else tests
    keys, _ = _cell_keys(kind)
    if mine.empty:
        return pd.DataFrame()
    out = pd.DataFrame({key: mine[key].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v)) for key in keys})
    out["other"] = mine["other"]
    counts = zip(mine["ok_ref"], mine["n_ref"], mine["ok_other"], mine["n_other"], strict=True)
    out["ok ref/other"] = [f"{a}/{n} | {b}/{m}" for a, n, b, m in counts]
    out["mean ref"] = mine["mean_ref"].map(_fmt)
    out["mean other"] = mine["mean_other"].map(_fmt)
    out["diff [95 % CI]"] = [f"{_fmt(d)} [{_fmt(lo)}, {_fmt(hi)}]" for d, lo, hi in
                             zip(mine["diff"], mine["diff_ci_low"], mine["diff_ci_high"], strict=True)]  # fmt: skip
    out["median ref/other"] = [f"{_fmt(a)} / {_fmt(b)}" for a, b in
                               zip(mine["median_ref"], mine["median_other"], strict=True)]  # fmt: skip
    out["q times"] = mine["q_times"].map(lambda v: _fmt(v, 3))
    out["q failures"] = mine["q_failures"].map(lambda v: _fmt(v, 3))
    out["differs"] = mine["differs"].map(lambda v: "**yes**" if v else "no")
    return out


def compare(folders: list[Path], out: Path | None = None, metric: str = DEFAULT_METRIC) -> tuple[Path, str]:
    """Write the comparison of ``folders``; return the output folder and the text to print."""
    kind, runs = load_runs(folders)
    out = make_results_dir(out if out is not None else default_out(runs))
    metrics = [metric, *[m for m in METRICS if m != metric]] if kind == "experiment1" else ["load"]
    tests = cell_tests(kind, runs, metrics)
    if kind == "experiment2":
        figures = plot_experiment2(runs, out / "compare")
    else:
        figures = plot_experiment1(runs, metrics, out / "compare")
    tests.to_csv(out / "compare.csv", index=False)
    diff = metadata_diff(runs)
    lines = [f"# Comparison of {', '.join(f'`{r.label}`' for r in runs)}", "",
             f"Reference: `{runs[0].label}`. Per cell: difference of the means (other - reference, ms) with its 95 % "
             "bootstrap CI, Mann-Whitney U test of the times, Fisher's exact test of the failures; q = p adjusted "
             f"over all tests (Benjamini-Hochberg); `differs`: a q below {FDR:g}.", "",
             "## Metadata that differ", "",
             diff.to_markdown(index=False, disable_numparse=True) if not diff.empty else "(none)", ""]  # fmt: skip
    for name in metrics:
        table = printable(tests, kind, name)
        title = METRIC_LABELS.get(name, "page load time")
        lines += [f"## {title}", "", table.to_markdown(index=False, disable_numparse=True) if not table.empty
                  else "(no cell in common)", ""]  # fmt: skip
    (out / "compare.md").write_text("\n".join(lines))
    hand_to_invoking_user(out / "compare.csv", out / "compare.md")
    chosen = printable(tests, kind, metrics[0])
    text = "\n".join([
        f"compare: {len(runs)} folders of {kind}; reference {runs[0].label}",
        "metadata that differ:",
        diff.to_string(index=False) if not diff.empty else "  (none)",
        "",
        f"{METRIC_LABELS.get(metrics[0], 'page load time')} per cell (all metrics in compare.md):",
        chosen.to_string(index=False) if not chosen.empty else "  (no cell in common)",
        "",
        f"wrote {', '.join(p.name for p in [*figures, out / 'compare.csv', out / 'compare.md'])} in {out}",
    ])  # fmt: skip
    return out, text


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 2 with one line when the folders cannot be compared."""
    parser = command_parser("analysis.compare", __doc__)
    parser.add_argument("folders", nargs="+", type=Path,
                        help="result folders of one experiment; the first is the reference")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/compare/<labels>)")
    parser.add_argument("--metric", choices=list(METRICS), default=DEFAULT_METRIC,
                        help="experiment 1 metric printed first (default accept)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        _, text = compare(args.folders, args.out, args.metric)
    except (CompareError, SchemaError, OSError) as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
