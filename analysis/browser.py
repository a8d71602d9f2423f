"""A browser run of experiment 2 (issue 12) on its own and next to wget's: ``browser.md`` and ``wget_vs_browser.png``.

For a folder whose loads were made by headless Chromium (``client = "chromium"``):

* per site and strategy, the browser's page load time as its user sees it (Navigation Timing:
  navigation start -> load event, ``nav_load_ms``) and the proxy-log window that wget's Figure 9 uses
  (``load_ms``: the first connection the client proxy accepted -> the last response byte it passed
  on), each as a mean with a 95 % bootstrap CI;
* per site, RobE_SIM's improvement over kernel MPTCP (mean mptcp / mean robe-sim - 1) with a 95 %
  percentile-bootstrap CI (both samples resampled independently, ``scipy.stats.bootstrap``);
* what the browser did beyond the page: its own requests (the favicon: answered 404, never a page
  miss), its scripts' requests for URLs outside the page, HSTS upgrades, failed requests, page misses;
* next to the wget run of the same sites on the same network (``results/experiment2/paper``): the
  load times and improvements side by side, in a table and a figure.

Everything is read with pandas and drawn with seaborn, in this one module (analysis/figure9.py
draws the browser run's Figure 9 from ``load_ms`` as for wget).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats

from analysis import schema, style
from analysis.tables import save_png_pdf

CLASSIC, ROBE = "mptcp", "robe-sim"
#: The wget run each browser profile is compared with (same sites, same network), by profile name:
#: a folder beside the browser run's; the paper's profile for any other.
WGET_RUN_OF = {"browser": "paper", "browser-quick": "paper", "browser-zero": "zero"}
SEED = 8684
RESAMPLES = 10_000
#: The network of a profile: what must be equal for two runs to be compared.
NETWORK_KEYS = ("lte", "dsl", "internet_rtt_ms", "tcp_syn_linear_timeouts", "corpus", "tls_max", "dns", "lte_backup")
#: The improvements compared: wget's and Chromium's proxy window (load_ms), Chromium's nav_load_ms.
MEASURES = ("wget: proxy window", "Chromium: proxy window", "Chromium: navigation start -> load event")


def is_browser_run(folder: Path) -> bool:
    """Whether the folder's profile loaded pages with a browser."""
    profile = json.loads((folder / "metadata.json").read_text()).get("profile", {})
    return str(profile.get("client", "wget")) != "wget"


def read_runs(folder: Path) -> pd.DataFrame:
    """runs.csv of an experiment 2 folder, typed by ``analysis.schema.EXPERIMENT2``."""
    return schema.read_runs(folder, schema.EXPERIMENT2)


def mean_ci(values: pd.Series, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and its percentile-bootstrap CI."""
    data = values.dropna().to_numpy(dtype=float)
    if data.size < 2:
        mean = float(data.mean()) if data.size else float("nan")
        return mean, mean, mean
    res = stats.bootstrap((data,), np.mean, n_resamples=RESAMPLES, confidence_level=confidence,
                          method="percentile", random_state=np.random.default_rng(SEED))  # fmt: skip
    return float(data.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def improvement_ci(classic: pd.Series, robe: pd.Series, confidence: float = 0.95) -> tuple[float, float, float]:
    """100 * (mean classic / mean robe - 1) and its percentile-bootstrap CI, the samples resampled apart."""
    c, r = classic.dropna().to_numpy(dtype=float), robe.dropna().to_numpy(dtype=float)
    point = 100 * (c.mean() / r.mean() - 1)
    if c.size < 2 or r.size < 2:
        return float(point), float(point), float(point)

    def gain(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        return np.asarray(100 * (np.mean(a, axis=axis) / np.mean(b, axis=axis) - 1))

    res = stats.bootstrap((c, r), gain, n_resamples=RESAMPLES, confidence_level=confidence, vectorized=True,
                          paired=False, method="percentile", random_state=np.random.default_rng(SEED))  # fmt: skip
    return float(point), float(res.confidence_interval.low), float(res.confidence_interval.high)


def site_summary(runs: pd.DataFrame, column: str, sites: list[str]) -> pd.DataFrame:
    """Per site (rows in ``sites`` order): n, mean and CI per strategy, and RobE's improvement with its CI."""
    ok = runs[runs["status"] == "ok"]
    records = []
    for site in sites:
        mine = ok[ok["site"] == site]
        classic, robe = mine.loc[mine["strategy"] == CLASSIC, column], mine.loc[mine["strategy"] == ROBE, column]
        if classic.dropna().empty or robe.dropna().empty:
            continue
        record: dict[str, Any] = {"site": site}
        for name, sample in ((CLASSIC, classic), (ROBE, robe)):
            mean, low, high = mean_ci(sample)
            record.update({f"{name}_n": int(sample.notna().sum()), f"{name}_ms": mean, f"{name}_low": low,
                           f"{name}_high": high})  # fmt: skip
        gain, low, high = improvement_ci(classic, robe)
        record.update(improvement_pct=gain, improvement_low=low, improvement_high=high)
        records.append(record)
    return pd.DataFrame.from_records(records).set_index("site") if records else pd.DataFrame()


def request_counts(runs: pd.DataFrame, sites: list[str]) -> pd.DataFrame:
    """Per site: loads, ok loads, page misses, and what the browser requested beyond the page."""
    grouped = runs.groupby("site", sort=False)
    table = pd.DataFrame({
        "loads": grouped.size(),
        "ok": grouped["status"].apply(lambda s: int((s == "ok").sum())),
        "page_misses": grouped["replay_misses"].sum(),
        "failed_requests": grouped["failed_requests"].sum(),
        "own_requests": grouped["own_requests"].sum(),  # favicon requests (the browser's own), 404
        "script_requests": grouped["script_requests"].sum() if "script_requests" in runs else 0,
        "hsts_upgrades": grouped["hsts_upgrades"].sum(),
        "requests_per_load": grouped["browser_requests"].mean(),
        "objects": grouped["objects_expected"].max(),
        "connections_per_load": grouped["connections"].mean(),
        "cpu_idle_pct": grouped["cpu_idle_pct"].mean(),
    })  # fmt: skip
    return table.reindex([s for s in sites if s in table.index])


def same_network(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The network settings in which two profiles differ (empty: comparable)."""
    return [key for key in NETWORK_KEYS if a.get(key) != b.get(key)]


def _ms(value: float) -> str:
    return f"{value:.0f}"


def _gain(row: pd.Series) -> str:
    return f"{row['improvement_pct']:+.0f} % [{row['improvement_low']:+.0f}, {row['improvement_high']:+.0f}]"


def _time_table(summary: pd.DataFrame, title: str) -> list[str]:
    lines = [f"### {title}", "", f"| site | {CLASSIC} mean [ms] (95 % CI) | {ROBE} mean [ms] (95 % CI) | "
             f"improvement (95 % CI) | loads |", "|---|---|---|---|---|"]  # fmt: skip
    for site, r in summary.iterrows():
        lines.append(f"| {site} | {_ms(r[f'{CLASSIC}_ms'])} ({_ms(r[f'{CLASSIC}_low'])}-{_ms(r[f'{CLASSIC}_high'])}) | "
                     f"{_ms(r[f'{ROBE}_ms'])} ({_ms(r[f'{ROBE}_low'])}-{_ms(r[f'{ROBE}_high'])}) | {_gain(r)} | "
                     f"{r[f'{CLASSIC}_n']:.0f}+{r[f'{ROBE}_n']:.0f} |")  # fmt: skip
    return [*lines, ""]


def _seconds(runs: pd.DataFrame, client: str, column: str) -> pd.DataFrame:
    """The ok loads of both strategies: site, series ("<client> <strategy>"), seconds (of ``column``)."""
    ok = runs[(runs["status"] == "ok") & runs["strategy"].isin((CLASSIC, ROBE))]
    return pd.DataFrame({"site": ok["site"], "series": client + " " + ok["strategy"], "seconds": ok[column] / 1000})


def _lighter(rgb: tuple[float, float, float], share: float = 0.45) -> tuple[float, float, float]:
    """``rgb`` mixed with ``share`` of white."""
    red, green, blue = rgb
    return (red + (1 - red) * share, green + (1 - green) * share, blue + (1 - blue) * share)


def plot_pair(long: pd.DataFrame, gains: pd.DataFrame, sites: list[str], stem: Path, title: str) -> list[Path]:
    """Mean load times (wget and Chromium, both strategies) and RobE's improvement per measure, per site."""
    sns.set_theme(style="whitegrid", context="paper", rc={"pdf.fonttype": 42, "ps.fonttype": 42})  # TrueType
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    # each strategy in its colour of every other figure (analysis.style); wget's bars a lighter shade of it
    palette = {f"wget {s}": _lighter(style.color(s)) for s in (CLASSIC, ROBE)}
    palette |= {f"Chromium {s}": style.color(s) for s in (CLASSIC, ROBE)}
    sns.barplot(data=long, x="site", y="seconds", hue="series", order=sites, hue_order=list(palette),
                palette=palette, errorbar=("ci", 95), n_boot=RESAMPLES, seed=SEED, capsize=0.1,
                err_kws={"linewidth": 1}, ax=top)  # fmt: skip
    top.set_ylabel("page load time [s]\n(mean, 95 % bootstrap CI)")
    top.set_xlabel("")
    top.legend(title="wget: proxy window; Chromium: navigation start -> load event", fontsize=8, title_fontsize=8,
               ncol=2, loc="upper left")  # fmt: skip
    top.set_ylim(0, top.get_ylim()[1] * 1.2)
    top.set_title(title, fontsize=9)
    measures = list(dict.fromkeys(gains["measure"]))
    # greys: the measures are no strategies, so none takes a strategy's colour
    colors = sns.color_palette("Greys", len(measures) + 1)[1:]
    width = 0.8 / max(1, len(measures))
    for k, (measure, color) in enumerate(zip(measures, colors, strict=True)):
        mine = gains[gains["measure"] == measure].set_index("site").reindex(sites).dropna(subset=["improvement_pct"])
        xs = [sites.index(s) + (k - (len(measures) - 1) / 2) * width for s in mine.index]
        bottom.bar(xs, mine["improvement_pct"], width, color=color, label=measure)
        bottom.errorbar(xs, mine["improvement_pct"], fmt="none", ecolor="black", elinewidth=1, capsize=2,
                        yerr=[mine["improvement_pct"] - mine["improvement_low"],
                              mine["improvement_high"] - mine["improvement_pct"]])  # fmt: skip
    bottom.grid(False, axis="x")
    bottom.set_axisbelow(True)
    bottom.axhspan(50, 100, color="gold", alpha=0.25, label="paper: 50-100 %")
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel(f"{ROBE} improvement [%]\n(mean {CLASSIC} / mean {ROBE} - 1, 95 % CI)")
    bottom.legend(fontsize=8, loc="upper left", ncol=2)
    bottom.set_ylim(min(0, bottom.get_ylim()[0]), max(110, bottom.get_ylim()[1] * 1.25))
    bottom.set_xticks(range(len(sites)))
    bottom.set_xticklabels(sites, rotation=30, ha="right")
    fig.tight_layout()
    files = save_png_pdf(fig, stem)
    plt.close(fig)
    sns.reset_orig()
    return files


def write_report(folder: Path, wget_folder: Path | None = None) -> list[Path]:
    """``browser.md`` (and ``wget_vs_browser.png``/``.pdf`` when the wget run is comparable) in ``folder``;
    the wget run is ``wget_folder``, by default the sibling folder ``WGET_RUN_OF`` names."""
    metadata = json.loads((folder / "metadata.json").read_text())
    profile = metadata.get("profile", {})
    if wget_folder is None:
        wget_folder = folder.parent / WGET_RUN_OF.get(str(profile.get("name")), "paper")
    runs = read_runs(folder)
    sites = [s for s in profile.get("sites", []) if s in set(runs["site"])]
    nav, window = site_summary(runs, "nav_load_ms", sites), site_summary(runs, "load_ms", sites)
    counts = request_counts(runs, sites)
    last = (metadata.get("invocations") or [{}])[-1]
    tools = last.get("tools", {})
    per_cell = runs.groupby(["site", "strategy"]).size()
    lines = [
        "# Experiment 2 with headless Chromium",
        "",
        f"Profile `{profile.get('name')}` ({profile.get('description', '')}); {len(runs)} loads stored, "
        f"{per_cell.min()}-{per_cell.max()} per site and strategy (profile: {profile.get('repetitions')}); "
        f"commit {metadata.get('git', {}).get('commit', '?')}; {tools.get('chromium', '?')}, Playwright "
        f"{tools.get('playwright', '?')}; {last.get('arguments', {}).get('jobs', '?')} network(s) at a time.",
        "",
        "## Loads and what the browser requested beyond the page",
        "",
        f"- loads ok: {int(counts['ok'].sum())} of {len(runs)}; page misses: {int(counts['page_misses'].sum())}; "
        f"failed requests (not the browser's own nor its scripts'): {int(counts['failed_requests'].sum())}",
        f"- the browser's own requests (favicon, answered 404, not page misses): {int(counts['own_requests'].sum())} "
        f"in {len(runs)} loads; its scripts' requests for URLs outside the page (404): "
        f"{int(counts['script_requests'].sum())}; HSTS-upgraded requests answered from http recordings: "
        f"{int(counts['hsts_upgrades'].sum())}",
        "",
        "| site | ok/loads | page objects | requests per load | connections per load | page misses | failed | "
        "favicon (own) | script, outside the page | HSTS upgrades | CPU idle during loads |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for c in counts.itertuples():
        lines.append(f"| {c.Index} | {c.ok}/{c.loads} | {c.objects} | {c.requests_per_load:.1f} | "
                     f"{c.connections_per_load:.1f} | {c.page_misses} | {c.failed_requests} | {c.own_requests} | "
                     f"{c.script_requests} | {c.hsts_upgrades} | {c.cpu_idle_pct:.0f} % |")  # fmt: skip
    lines += ["", f"## Page load time and {ROBE}'s improvement over {CLASSIC}", ""]
    if not nav.empty:
        lines += _time_table(nav, "Chromium: navigation start -> load event (Navigation Timing; what a user waits for)")
    if not window.empty:
        lines += _time_table(window, "Chromium: the proxy window (as wget's Figure 9: first accepted connection -> "
                                     "last response byte passed to the client)")  # fmt: skip
    files = [folder / "browser.md"]
    wget_file = wget_folder / "metadata.json"
    wget_meta = json.loads(wget_file.read_text()) if wget_file.exists() else {}
    differ = same_network(profile, wget_meta.get("profile", {})) if wget_meta else ["no wget run"]
    lines += ["## Next to wget", ""]
    if differ:
        lines += [f"Not compared: the wget run `{wget_folder}` differs in {', '.join(differ)}.", ""]
    else:
        wget_runs = read_runs(wget_folder)
        wget = site_summary(wget_runs, "load_ms", sites)
        lines += [f"wget: `{wget_folder.relative_to(wget_folder.parent.parent.parent)}` (profile "
                  f"`{wget_meta['profile']['name']}`, commit {wget_meta.get('git', {}).get('commit', '?')[:10]}, "
                  f"{(wget_meta.get('invocations') or [{}])[-1].get('arguments', {}).get('jobs', '?')} network(s) at a "
                  "time), the same sites on the same network.", "",
                  f"| site | wget {CLASSIC} / {ROBE} [ms] | wget improvement (CI) | Chromium {CLASSIC} / {ROBE} [ms] "
                  "(navigation) | Chromium improvement (CI), navigation | Chromium improvement (CI), proxy window |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for site in [s for s in sites if s in wget.index and s in nav.index and s in window.index]:
            w, n, p = wget.loc[site], nav.loc[site], window.loc[site]
            lines.append(f"| {site} | {_ms(w[f'{CLASSIC}_ms'])} / {_ms(w[f'{ROBE}_ms'])} | {_gain(w)} | "
                         f"{_ms(n[f'{CLASSIC}_ms'])} / {_ms(n[f'{ROBE}_ms'])} | {_gain(n)} | {_gain(p)} |")  # fmt: skip
        lines.append("")
        long = pd.concat([_seconds(wget_runs, "wget", "load_ms"), _seconds(runs, "Chromium", "nav_load_ms")],
                         ignore_index=True)  # fmt: skip
        gains = pd.concat([frame.reset_index().assign(measure=label) for frame, label in zip(
            (wget, window, nav), MEASURES, strict=True)])  # fmt: skip
        title = (
            f"Experiment 2, wget (`{wget_meta['profile']['name']}`) and headless Chromium "
            f"(`{profile.get('name')}`): LTE {profile.get('lte', {}).get('rtt_ms')} ms (default) + "
            f"DSL {profile.get('dsl', {}).get('rtt_ms')} ms, internet {profile.get('internet_rtt_ms')} ms"
        )
        files += plot_pair(long, gains, sites, folder / "wget_vs_browser", title)
    (folder / "browser.md").write_text("\n".join(lines))
    return files
