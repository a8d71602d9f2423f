"""``make soak`` itself: its options are checked, and a short run on loopback handles every kind of
client, verifies every byte and ends with the served side's resources back at their baseline.

The timing check (worst event-loop stall) is the benchmark's figure, not asserted here: a short run
on a busy CI machine says nothing about it. The resource checks are exact and hold on any machine.
"""

import json

import pytest

from experiments import soak


def test_options_out_of_range_are_refused_naming_the_option(capsys):
    for argv, named in ((["--duration", "0"], "--duration=0.0"), (["--hostile", "-1"], "--hostile"),
                        (["--header-timeout", "99"], "--header-timeout=99.0")):  # fmt: skip
        with pytest.raises(SystemExit):
            soak.parse_args(argv)
        assert named in capsys.readouterr().err


def test_a_short_soak_verifies_every_byte_and_returns_to_its_baseline(tmp_path):
    options = soak.parse_args(["--duration", "4", "--well-behaved", "3", "--hostile", "4", "--header-timeout", "0.5",
                               "--out", str(tmp_path)])  # fmt: skip
    report, _passed = soak.soak(options)
    checks = report["checks"]
    for name in ("every transfer verified", "every hostile client cut off in time", "tables back to baseline",
                 "file descriptors back to baseline", "tasks back to baseline"):  # fmt: skip
        assert checks[name], (name, report["served_side"], report["leftovers"], report["well_behaved"]["failures"])
    assert report["well_behaved"]["transfers"] > 0 and report["well_behaved"]["bytes_verified"] > 0
    assert report["hostile"]["clients"] > 0
    assert report["served_side"]["timeline"], "the served side was sampled during the run"
    headline = soak.headline(report)
    assert headline["fds_start_end_peak"][0] == headline["fds_start_end_peak"][1]
    assert headline["tables_start"] == headline["tables_end"]
    json.dumps(headline)  # stored in metadata.json


def test_the_stall_monitor_keeps_fixed_histograms_and_their_99th_percentile():
    from experiments.soak_target import StallMonitor

    monitor = StallMonitor()
    for late_ms in [1.0] * 990 + [40.0] * 9 + [7000.0]:  # 7 s lands in the last bin, not outside
        monitor.late[monitor._bin(late_ms)] += 1
        monitor.ticks += 1
    assert monitor._p99(monitor.late) == pytest.approx(1.1)
    monitor.late[monitor._bin(40.0)] += 20
    monitor.ticks += 20
    assert monitor._p99(monitor.late) == pytest.approx(40.1)
    assert len(monitor.late) == StallMonitor.BINS
    monitor.reset()
    assert monitor.ticks == 0 and monitor.figures()["p99_ms"] == 0.0
