"""``make ablation``: every ablation level of experiment 2 in turn, then its analysis.

Runs the profiles ``experiments/profiles/experiment2-abl-*.toml`` (each the paper profile with one
factor changed) into ``results/experiment2/abl-<level>/`` with ``-j`` parallel networks (resumable
like any experiment 2 sweep: rerun to finish), prints each level's and the total wall time, then
``analysis.ablation`` (which also reads the stored ``paper`` run: the reference level of every
factor). ``--only abl-tls12 ...`` runs a subset. Each level is an experiment 2 sweep with all
that implies: its results folder locked, a row cut short rerun, a resume by other code refused
unless ``--allow-mixed`` (passed on to every level).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from analysis.ablation import run as analyse
from experiments.experiment2 import RESULTS_BASE, Options, run_sweep
from experiments.lifecycle import EXPECTED_FAILURES, run_guarded
from experiments.profile2 import PROFILE_DIR, load_profile2
from robe_lab.cliparse import command_parser
from topologies.startup import one_line

PREFIX = "experiment2-abl-"


def ablation_profiles() -> list[str]:
    """The ablation profiles' names, sorted."""
    return sorted(p.stem.removeprefix("experiment2-") for p in PROFILE_DIR.glob(f"{PREFIX}*.toml"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the levels, then the analysis; exit status of the worst level."""
    parser = command_parser("experiments.ablation", __doc__)
    parser.add_argument("-j", "--jobs", type=int, default=3, help="parallel Figure 7 networks per level")
    parser.add_argument("--only", nargs="*", default=None, help="ablation profiles to run (default: all)")
    parser.add_argument("--no-analysis", action="store_true", help="do not run analysis.ablation afterwards")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="let a level folder hold loads of other code (as experiment 2)")  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 16:
        parser.error(f"--jobs={args.jobs}: must be 1..16")
    names = ablation_profiles()
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"--only: unknown ablation profile(s) {', '.join(unknown)} (known: {', '.join(names)})")
    return run_guarded(lambda: run_levels(args.only or names, args.jobs, args.allow_mixed, not args.no_analysis),
                       prefix="ablation: ")  # fmt: skip


def run_levels(levels: Sequence[str], jobs: int, allow_mixed: bool, analysis: bool) -> int:
    """Each level's sweep in turn (a level that cannot start does not stop the others), then the
    analysis; the worst level's exit status (130 at once when one was interrupted)."""
    status, started = 0, time.monotonic()
    for name in levels:
        profile = load_profile2(name)
        level_start = time.monotonic()
        try:
            code = run_sweep(Options(profile, RESULTS_BASE / profile.name, jobs, None, allow_mixed=allow_mixed))
        except EXPECTED_FAILURES as err:
            print(f"ablation: {name}: error: {one_line(err)}", file=sys.stderr)
            code = 2
        print(f"ablation: {name} done in {(time.monotonic() - level_start) / 60:.1f} min (status {code})", flush=True)
        status = max(status, code)
        if code == 130:
            return code
    print(f"ablation: all levels in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    if analysis:
        print(analyse())
    return status


if __name__ == "__main__":
    sys.exit(main())
