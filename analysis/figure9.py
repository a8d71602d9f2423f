"""Figure 9 of the paper from a stored experiment 2 folder: page load time per site with MPTCP and
with RobE (mean and 95 % bootstrap CI of the successful loads), and RobE's relative improvement
beside the paper's 50-100 %; plus ``summary.csv`` and ``report.md``.

Improvement of a pair (classic, robe) at a site = mean load time classic / mean load time robe - 1
(the paper's "loading time improvements between 50 % and 100 %").
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from analysis.stats import bootstrap_mean_ci

#: (classic, RobE) pairs compared, when both were run.
PAIRS = (
    ("mptcp", "robe-sim"),
    ("mptcp-user", "robe-downgrade"),
    ("mptcp-user+kernel-default", "robe-downgrade+kernel-default"),
)
PAPER_IMPROVEMENT = (50.0, 100.0)
COLORS = {"mptcp": "tab:blue", "robe-sim": "tab:green", "mptcp-user": "tab:purple", "robe-downgrade": "tab:red",
          "tcp": "tab:gray", "robe-timer": "tab:orange", "robe-bbm": "tab:brown", "robe-esim": "tab:pink",
          "mptcp-user+kernel-default": "plum", "robe-downgrade+kernel-default": "lightcoral",
          "direct": "black", "direct-mptcp": "tab:olive"}  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One (site, strategy): its loads and mean load time."""

    site: str
    strategy: str
    loads: int
    ok: int
    mean_ms: float
    ci_low_ms: float
    ci_high_ms: float
    median_ms: float
    objects: int
    misses: int


def read_loads(folder: Path) -> list[dict[str, str]]:
    """runs.csv of an experiment 2 folder."""
    with (folder / "runs.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def summarise(rows: list[dict[str, str]], site_order: list[str] | None = None) -> list[Cell]:
    """Cells in ``site_order`` (the profile's; else first appearance), strategies in the PAIRS order."""
    cells = []
    present = list(dict.fromkeys(r["site"] for r in rows))
    sites = [s for s in site_order or [] if s in present] + [s for s in present if s not in (site_order or [])]
    order = [s for pair in PAIRS for s in pair]
    strategies = sorted({r["strategy"] for r in rows}, key=lambda s: order.index(s) if s in order else 99)
    for site in sites:
        for strategy in strategies:
            mine = [r for r in rows if r["site"] == site and r["strategy"] == strategy]
            if not mine:
                continue
            times = [float(r["load_ms"]) for r in mine if r["status"] == "ok"]
            mean, low, high = bootstrap_mean_ci(times) if times else (float("nan"),) * 3
            median = sorted(times)[len(times) // 2] if times else float("nan")
            cells.append(Cell(site, strategy, len(mine), len(times), mean, low, high, median,
                              max((int(r["objects_fetched"] or 0) for r in mine), default=0),
                              sum(int(r["replay_misses"] or 0) for r in mine)))  # fmt: skip
    return cells


def improvements(cells: list[Cell]) -> list[dict[str, Any]]:
    """Per site and pair: mean ratio classic/robe and the improvement in percent."""
    by_key = {(c.site, c.strategy): c for c in cells}
    out = []
    for site in dict.fromkeys(c.site for c in cells):
        for classic, robe in PAIRS:
            c, r = by_key.get((site, classic)), by_key.get((site, robe))
            if c is None or r is None or not c.ok or not r.ok:
                continue
            ratio = c.mean_ms / r.mean_ms
            out.append({"site": site, "classic": classic, "robe": robe, "classic_ms": c.mean_ms, "robe_ms": r.mean_ms,
                        "ratio": ratio, "improvement_pct": 100 * (ratio - 1),
                        "robe_faster": r.ci_high_ms < c.ci_low_ms})  # fmt: skip
    return out


def plot(cells: list[Cell], gains: list[dict[str, Any]], metadata: dict[str, Any], stem: Path) -> list[Path]:
    """Draw Figure 9 (PNG and PDF)."""
    sites = list(dict.fromkeys(c.site for c in cells))
    strategies = list(dict.fromkeys(c.strategy for c in cells))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / max(1, len(strategies))
    for k, strategy in enumerate(strategies):
        xs, ys, err_low, err_high = [], [], [], []
        for i, site in enumerate(sites):
            cell = next((c for c in cells if c.site == site and c.strategy == strategy and c.ok), None)
            if cell is None:
                continue
            xs.append(i + (k - (len(strategies) - 1) / 2) * width)
            ys.append(cell.mean_ms / 1000)
            err_low.append((cell.mean_ms - cell.ci_low_ms) / 1000)
            err_high.append((cell.ci_high_ms - cell.mean_ms) / 1000)
        top.bar(xs, ys, width, yerr=[err_low, err_high], capsize=2, color=COLORS.get(strategy, "black"),
                label=strategy)  # fmt: skip
    top.set_ylabel("page load time [s]\n(mean, 95 % bootstrap CI)")
    top.legend(fontsize=8, ncol=min(len(strategies), 4), loc="upper left")
    top.set_ylim(0, top.get_ylim()[1] * (1.25 if len(strategies) > 4 else 1.1))  # room for the legend
    top.grid(True, axis="y", alpha=0.3)
    profile = metadata.get("profile", {})
    top.set_title(
        f"Experiment 2 ({profile.get('name', '?')}, {profile.get('corpus', '?')} corpus): LTE "
        f"{profile.get('lte', {}).get('rtt_ms')} ms (default) + DSL {profile.get('dsl', {}).get('rtt_ms')} ms, "
        f"internet {profile.get('internet_rtt_ms')} ms",
        fontsize=9,
    )
    pairs = list(dict.fromkeys((g["classic"], g["robe"]) for g in gains))
    width2 = 0.8 / max(1, len(pairs))
    for k, (classic, robe) in enumerate(pairs):
        mine = {g["site"]: g for g in gains if (g["classic"], g["robe"]) == (classic, robe)}
        xs = [i + (k - (len(pairs) - 1) / 2) * width2 for i, s in enumerate(sites) if s in mine]
        bottom.bar(xs, [mine[s]["improvement_pct"] for s in sites if s in mine], width2,
                   color=COLORS.get(robe, "black"), label=f"{robe} vs {classic}")  # fmt: skip
    bottom.axhspan(*PAPER_IMPROVEMENT, color="gold", alpha=0.25, label="paper: 50-100 %")
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("RobE improvement [%]\n(mean classic / mean RobE - 1)")
    bottom.legend(fontsize=8)
    bottom.grid(True, axis="y", alpha=0.3)
    bottom.set_xticks(range(len(sites)))
    bottom.set_xticklabels(sites, rotation=30, ha="right")
    fig.tight_layout()
    files = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for file in files:
        fig.savefig(file, dpi=150, metadata={"CreationDate": None} if file.suffix == ".pdf" else None)
    plt.close(fig)
    return files


def report(cells: list[Cell], gains: list[dict[str, Any]], rows: list[dict[str, str]], metadata: dict[str, Any]) -> str:
    """report.md: the table per site, the acceptance checks and the run's provenance."""
    lines = ["# Experiment 2 report", "", f"Profile `{metadata.get('profile', {}).get('name')}`; "
             f"{len(rows)} loads stored; commit {metadata.get('git', {}).get('commit', '?')}.", ""]  # fmt: skip
    walls = [inv.get("wall_time_s") for inv in metadata.get("invocations", []) if inv.get("wall_time_s")]
    if walls:
        lines += [f"Wall time of the invocations: {', '.join(f'{w / 60:.1f} min' for w in walls)}.", ""]
    lines += ["| site | strategy | ok/loads | mean load [ms] | 95 % CI | median | objects | misses |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in cells:
        ci = f"{c.ci_low_ms:.0f}-{c.ci_high_ms:.0f}"
        lines.append(f"| {c.site} | {c.strategy} | {c.ok}/{c.loads} | {c.mean_ms:.0f} | {ci} | {c.median_ms:.0f} | "
                     f"{c.objects} | {c.misses} |")  # fmt: skip
    lines += ["", "## RobE against MPTCP per site (paper: improvements of 50-100 % in most cases)", "",
              "| site | pair | classic [ms] | RobE [ms] | ratio | improvement | RobE faster (CIs apart) |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for g in gains:
        apart = "yes" if g["robe_faster"] else "no"
        lines.append(f"| {g['site']} | {g['robe']} vs {g['classic']} | {g['classic_ms']:.0f} | {g['robe_ms']:.0f} | "
                     f"{g['ratio']:.2f} | {g['improvement_pct']:+.0f} % | {apart} |")  # fmt: skip
    failed = [r for r in rows if r["status"] != "ok"]
    misses = sum(int(r["replay_misses"] or 0) for r in rows)
    mismatched = [r for r in rows if r["status"] == "ok" and not
                  (r["objects_fetched"] == r["objects_served"] == r["objects_expected"])]  # fmt: skip
    faster = all(g["ratio"] > 1 for g in gains if g["classic"] == "mptcp")
    lines += [
        "",
        "## Checks",
        "",
        f"- robe-sim loads faster than mptcp at every site: {'yes' if faster and gains else 'NO'}",
        f"- loads not ok: {len(failed)} of {len(rows)}"
        + (f" (first: {failed[0]['run_id']}: {failed[0]['error']})" if failed else ""),
        f"- replay misses over all loads: {misses}",
        f"- ok loads whose fetched / served / page object counts differ: {len(mismatched)}",
        "",
    ]
    return "\n".join(lines)


def render(folder: Path) -> list[Path]:
    """Regenerate Figure 9, summary.csv and report.md in one experiment 2 folder."""
    metadata = json.loads((folder / "metadata.json").read_text())
    rows = read_loads(folder)
    cells = summarise(rows, list(metadata.get("profile", {}).get("sites", [])))
    gains = improvements(cells)
    with (folder / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(Cell.__dataclass_fields__))
        writer.writeheader()
        for cell in cells:
            writer.writerow(asdict(cell))
    (folder / "report.md").write_text(report(cells, gains, rows, metadata))
    return [*plot(cells, gains, metadata, folder / "figure9"), folder / "summary.csv", folder / "report.md"]
