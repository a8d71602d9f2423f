"""``make validate-transport``: the transports' timing against the formulas, and the userspace
classic-MPTCP twin against kernel MPTCP.

Runs two experiment 1 sweeps on Figure 3 with the default path at 40 ms and the other at 20 ms
(profiles ``transport-formulas``: every strategy at 0 % loss; ``transport-ks``: ``mptcp`` and
``mptcp-user`` at 0, 30 and 60 % loss), resumable like experiment 1, then prints and stores
(``results/transport-validation/validation.md`` and ``.json``) per strategy the measured set-up and
subsequent-subflow ready times beside its formula, the paper's eqs. (2)-(9) and RFC 8684's join
rule, and the two-sample KS test and mean difference of the twin. ``--analyse-only`` re-reads
stored results (no root). Exit status 0 only when every check passes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analysis.ownership import hand_to_invoking_user, make_results_dir
from analysis.transport_validation import check_formulas, check_twin, gains, read_rows, render
from experiments import experiment1
from experiments.lifecycle import ExperimentError, run_guarded
from experiments.metadata import base_metadata, write_json
from experiments.profile import load_profile
from robe_lab.cliparse import command_parser
from robe_lab.paths import results_dir

RESULTS = results_dir() / "transport-validation"
PROFILES = ("transport-formulas", "transport-ks")


def measured_rtts(sweep: Path) -> tuple[float, float]:
    """Mean over the workers' pre-flight RTT medians of both paths (the links' real RTTs).

    The formulas are evaluated at these: the emulated links add ~0.3 ms to each configured RTT
    (probe serialisation and forwarding; see results/link-validation), which is the network's
    share, not the transport's.
    """
    metadata = json.loads((sweep / "metadata.json").read_text())
    reports = [r for inv in metadata.get("invocations", []) for r in inv.get("preflight", {}).values()]
    if not reports:
        profile = load_profile(sweep.name)
        return profile.path1.rtt_ms, profile.path2.rtt_ms
    return (sum(r["path1"]["p50_ms"] for r in reports) / len(reports),
            sum(r["path2"]["p50_ms"] for r in reports) / len(reports))  # fmt: skip


def analyse(base: Path) -> tuple[str, dict[str, object], bool]:
    """Report text, JSON summary and overall verdict from the stored sweeps under ``base``."""
    rtt_default, rtt_other = measured_rtts(base / PROFILES[0])
    checks = check_formulas(read_rows(base / PROFILES[0] / "runs.csv"), rtt_default, rtt_other)
    pairs = [g for g in (gains(checks, "mptcp", "robe-sim"), gains(checks, "mptcp-user", "robe-downgrade")) if g]
    twin_csv = base / PROFILES[1] / "runs.csv"
    twins = check_twin(read_rows(twin_csv)) if twin_csv.exists() else []
    passed = all(c.within for c in checks) and bool(twins) and all(t.agree for t in twins)
    summary: dict[str, object] = {
        "rtt_default_ms": rtt_default,
        "rtt_other_ms": rtt_other,
        "formulas": [c.to_dict() for c in checks],
        "gains": [g.__dict__ for g in pairs],
        "twin": [t.__dict__ for t in twins],
        "passed": passed,
    }
    return render(checks, pairs, twins, rtt_default, rtt_other), summary, passed


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) both sweeps, then analyse; exit 0 when every check passes."""
    parser = command_parser("experiments.validate_transport", __doc__)
    parser.add_argument("-j", "--jobs", type=int, default=8, help="parallel Figure 3 networks per sweep")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    parser.add_argument("--analyse-only", action="store_true", help="only analyse stored results (no root)")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 64:
        parser.error(f"--jobs={args.jobs}: must be 1..64")
    return run_guarded(lambda: _validate(args.out, args.jobs, args.analyse_only), prefix="validate-transport: ")


def _validate(out: Path, jobs: int, analyse_only: bool) -> int:
    if not analyse_only:
        for name in PROFILES:  # each an experiment 1 sweep: its own checks, lock, metadata and resume
            profile = load_profile(name)
            status = experiment1.run_sweep(experiment1.Options(profile, out / name, jobs, None, None))
            if status != 0:
                print(f"validate-transport: sweep {name} ended with status {status}", file=sys.stderr)
                return status
    if not (out / PROFILES[0] / "runs.csv").exists():
        raise ExperimentError(f"no stored sweep in {out}; run: sudo make validate-transport")
    report, summary, passed = analyse(out)
    print(report)
    make_results_dir(out)
    (out / "validation.md").write_text(report)
    hand_to_invoking_user(out / "validation.md")
    write_json(out / "validation.json", summary)
    arguments = {"jobs": jobs, "analyse_only": analyse_only, "out": str(out)}
    write_json(out / "metadata.json", base_metadata("validate-transport", arguments))
    print(f"validate-transport: {'PASS' if passed else 'FAIL'}; report in {out / 'validation.md'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
