"""The ablation of experiment 2: RobE's improvement against each factor that could explain why our
Figure 9 shows less than the paper's 50-100 %.

Each level is one stored experiment 2 folder (``make ablation`` runs them); the paper profile is
the level every factor starts from (internet RTT 10 ms, TLS 1.3, wget's connection reuse, DNS
over the default path, the kernel's default scheduling, the recorded sites, wget). For each level
and pair (kernel: ``mptcp`` -> ``robe-sim``; userspace: ``mptcp-user`` -> ``robe-downgrade``) the
improvement is mean classic / mean RobE - 1, per site and pooled (the sum over sites of the
per-site means, so every site weighs by its load time), with a 95 % percentile-bootstrap interval
(loads resampled within each site and strategy, 2,000 rounds, fixed seed).

``python -m analysis.ablation`` writes ``results/experiment2/ablation/`` (``ablation.csv``,
``ablation.md``, ``improvement_vs_factor.png``, ``metadata.json`` with each level's folder,
commit, load counts and replay misses).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis.schema import EXPERIMENT2, read_runs
from analysis.style import apply_theme, color, marker, save
from analysis.tables import markdown
from robe_lab.cliparse import command_parser
from robe_lab.paths import results_dir

RESULTS = results_dir() / "experiment2"
PAIRS = {"kernel": ("mptcp", "robe-sim"), "userspace": ("mptcp-user", "robe-downgrade")}
ROUNDS = 2000


@dataclass(frozen=True)
class Level:
    """One level of one factor: the folder holding its loads and how its strategies map to pairs."""

    factor: str
    level: str
    folder: str
    baseline: bool = False
    # pair -> (classic, RobE) strategy names in that folder (default: PAIRS)
    pairs: tuple[tuple[str, str, str], ...] = tuple((k, a, b) for k, (a, b) in PAIRS.items())


BASE = "paper"
LEVELS = (
    Level("internet RTT", "0 ms", "abl-internet0"),
    Level("internet RTT", "10 ms", BASE, True),
    Level("internet RTT", "30 ms", "abl-internet30"),
    Level("TLS maximum", "1.2", "abl-tls12"),
    Level("TLS maximum", "1.3", BASE, True),
    Level("connection reuse", "as wget does", BASE, True),
    Level("connection reuse", "one per object", "abl-per-object"),
    Level("DNS", "default path", BASE, True),
    Level("DNS", "local cache", "abl-dns-cache"),
    Level("kernel scheduling", "default", BASE, True, (("kernel", "mptcp", "robe-sim"),)),
    Level("kernel scheduling", "LTE backup", "abl-lte-backup", False, (("kernel", "mptcp", "robe-sim"),)),
    Level("userspace scheduler", "lowest RTT", BASE, True, (("userspace", "mptcp-user", "robe-downgrade"),)),
    Level(
        "userspace scheduler",
        "kernel default",
        BASE,
        False,
        (("userspace", "mptcp-user+kernel-default", "robe-downgrade+kernel-default"),),
    ),
    Level("page", "recorded sites", BASE, True),
    Level("page", "30 x 1 kB, one host", "abl-synthetic"),
)


def read_loads(folder: Path) -> pd.DataFrame:
    """Every final row of ``runs.csv`` (last per run id), read through the schema."""
    return read_runs(folder, EXPERIMENT2).drop_duplicates("run_id", keep="last")


def improvement(classic: np.ndarray, robe: np.ndarray) -> float:
    """mean classic / mean RobE - 1."""
    return float(classic.mean() / robe.mean() - 1)


def bootstrap(cells: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> tuple[float, float, float]:
    """Improvement of summed per-site means and its 95 % percentile-bootstrap interval."""
    point = sum(c.mean() for c, _ in cells) / sum(r.mean() for _, r in cells) - 1
    draws = np.empty(ROUNDS)
    for i in range(ROUNDS):
        top = sum(rng.choice(c, c.size).mean() for c, _ in cells)
        bottom = sum(rng.choice(r, r.size).mean() for _, r in cells)
        draws[i] = top / bottom - 1
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(point), float(low), float(high)


def level_rows(level: Level, loads: pd.DataFrame, rng: np.random.Generator) -> list[dict[str, object]]:
    """Per pair: one row per site and one pooled row."""
    ok = loads[loads["status"] == "ok"]
    rows = []
    for pair, classic, robe in level.pairs:
        cells = []
        for site in sorted(ok["site"].unique()):
            a = ok[(ok["site"] == site) & (ok["strategy"] == classic)]["load_ms"].to_numpy(float)
            b = ok[(ok["site"] == site) & (ok["strategy"] == robe)]["load_ms"].to_numpy(float)
            if a.size < 2 or b.size < 2:
                continue
            cells.append((a, b))
            value, low, high = bootstrap([(a, b)], rng)
            rows.append({"factor": level.factor, "level": level.level, "pair": pair, "site": site,
                         "classic_ms": a.mean(), "robe_ms": b.mean(), "improvement": value,
                         "ci_low": low, "ci_high": high, "loads": a.size + b.size})  # fmt: skip
        if cells:
            value, low, high = bootstrap(cells, rng)
            rows.append({"factor": level.factor, "level": level.level, "pair": pair, "site": "pooled",
                         "classic_ms": sum(a.mean() for a, _ in cells), "robe_ms": sum(b.mean() for _, b in cells),
                         "improvement": value, "ci_low": low, "ci_high": high,
                         "loads": sum(a.size + b.size for a, b in cells)})  # fmt: skip
    return rows


def plot(table: pd.DataFrame, path: Path) -> Path:
    """One panel per factor: pooled improvement per level and pair, with its 95 % interval."""
    pooled = table[table["site"] == "pooled"]
    factors = list(dict.fromkeys(pooled["factor"]))
    fig, axes = plt.subplots(1, len(factors), figsize=(2.3 * len(factors), 4.2), sharey=True, squeeze=False)
    apply_theme()
    sns.set_style("ticks")
    for ax, factor in zip(axes[0], factors, strict=True):
        part = pooled[pooled["factor"] == factor]
        levels = list(dict.fromkeys(part["level"]))
        ax.axhspan(50, 100, color="0.9", zorder=0)
        for k, pair in enumerate(PAIRS):
            mine = part[part["pair"] == pair]
            xs = [levels.index(v) + (k - 0.5) * 0.18 for v in mine["level"]]
            y = 100 * mine["improvement"]
            err = [100 * (mine["improvement"] - mine["ci_low"]), 100 * (mine["ci_high"] - mine["improvement"])]
            classic, robe = PAIRS[pair]
            ax.errorbar(xs, y, yerr=err, marker=marker(robe), linestyle="-", color=color(robe), capsize=3,
                        markersize=6, label=f"{pair} pair ({robe} vs {classic})")  # fmt: skip
        ax.set_xticks(range(len(levels)), levels, rotation=30, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(factor, fontsize=9)
        ax.set_xlim(-0.5, len(levels) - 0.5)
    high = max(105.0, 100 * float(pooled["ci_high"].max()) + 5)
    low = min(-5.0, 100 * float(pooled["ci_low"].min()) - 5)
    axes[0, 0].set_ylim(low, high)
    axes[0, 0].set_ylabel("RobE improvement, pooled over sites [%]\n(mean classic / mean RobE - 1, 95 % CI)",
                          fontsize=9)  # fmt: skip
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=9)
    axes[0, -1].text(len(dict.fromkeys(pooled[pooled["factor"] == factors[-1]]["level"])) - 0.6, 97,
                     "paper: 50-100 %", ha="right", va="top", fontsize=7, color="0.4")  # fmt: skip
    fig.suptitle("Experiment 2 ablation: RobE's improvement against each factor (paper profile: the reference level)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    return save(fig, path.with_suffix(""), ("png",), dpi=120, bbox_inches="tight")[0]


def run(results: Path = RESULTS, out: Path | None = None) -> str:
    """Read every level's folder, write the ablation folder; return the Markdown report."""
    out = out or results / "ablation"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    rows: list[dict[str, object]] = []
    sources: dict[str, dict[str, object]] = {}
    for level in LEVELS:
        folder = results / level.folder
        if not (folder / "runs.csv").exists():
            print(f"ablation: {folder} missing: level {level.factor} = {level.level} left out", file=sys.stderr)
            continue
        loads = read_loads(folder)
        meta = json.loads((folder / "metadata.json").read_text())
        git = meta.get("git", {})
        sources[level.folder] = {"commit": git.get("commit"), "dirty": git.get("dirty"),
                                 "complete": meta.get("complete"), "loads": len(loads),
                                 "ok": int((loads["status"] == "ok").sum()),
                                 "replay_misses": int(loads["replay_misses"].fillna(0).sum()),
                                 "wall_time_s": sum(i.get("wall_time_s", 0)
                                                    for i in meta.get("invocations", []))}  # fmt: skip
        rows += level_rows(level, loads, rng)
    table = pd.DataFrame(rows)
    table.to_csv(out / "ablation.csv", index=False, float_format="%.4f")
    figure = plot(table, out / "improvement_vs_factor.png")
    pooled = table[table["site"] == "pooled"].copy()
    pooled["improvement [%]"] = [f"{100 * v:+.0f} [{100 * lo:+.0f}, {100 * hi:+.0f}]"
                                 for v, lo, hi in zip(pooled["improvement"], pooled["ci_low"], pooled["ci_high"],
                                                      strict=True)]  # fmt: skip
    shown = pooled.set_index("factor")[["level", "pair", "classic_ms", "robe_ms", "improvement [%]", "loads"]]
    per_site = table[table["site"] != "pooled"].pivot_table(index=["factor", "level", "site"], columns="pair",
                                                             values="improvement", sort=False)  # fmt: skip
    text = (f"# Experiment 2 ablation\n\nPooled improvement (sum of per-site mean load times, classic / RobE - 1) "
            f"with 95 % bootstrap intervals; each level's folder is in metadata.json. Client: wget at every level "
            f"(the browser client of issue 12 does not exist yet).\n\n{markdown(shown, 0)}\n\n"
            f"Per site (improvement, fraction):\n\n{markdown(per_site.reset_index(level=[1, 2]), 2)}\n")  # fmt: skip
    (out / "ablation.md").write_text(text)
    total = sum(float(str(s["wall_time_s"])) for name, s in sources.items() if name != BASE)
    levels = [{"factor": v.factor, "level": v.level, "folder": v.folder, "baseline": v.baseline} for v in LEVELS]
    meta_out = {"kind": "experiment2-ablation", "levels": levels, "sources": sources,
                "client": "wget at every level; the browser client (issue 12) does not exist yet",
                "ablation_wall_time_s": round(total, 1), "figure": figure.name}  # fmt: skip
    (out / "metadata.json").write_text(json.dumps(meta_out, indent=1) + "\n")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = command_parser("analysis.ablation", __doc__)
    parser.add_argument("--results", type=Path, default=RESULTS, help="experiment 2 results folder")
    args = parser.parse_args(argv)
    print(run(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
