"""Ordering long attempts first, the timing canary's figures, the sweep plan, and the cluster's
pure parts (cluster specs, host checks, the workers' network pool)."""

import contextlib
import csv
import math
import threading
from collections import Counter

import pandas as pd
import pytest

from experiments.canary import canary_error_ms, count_flagged, flagged, row_fields, worst
from experiments.cluster import ClusterError, NetworkPool, check_hosts, parse_cluster
from experiments.profile import expand_runs, load_profile
from experiments.schedule import RISK_FLOOR, band, expected_attempt_s, order_long_first, syn_phase_s, tail_risk
from experiments.sweep_plan import list_schedule


def test_expected_attempt_time_follows_the_back_offs():
    # A dead default path: the classic strategies wait for the kernel to give up on the SYN (127 s).
    assert syn_phase_s(1.0, 6) == pytest.approx(127.0)
    assert expected_attempt_s("tcp", 100, hold_s=0) == pytest.approx(127.0)
    assert expected_attempt_s("tcp", 0, hold_s=0.3) == pytest.approx(0.3)
    # Monotone in the loss for the classic strategies, bounded by the timer for RobE_TIMER.
    times = [expected_attempt_s("mptcp", loss) for loss in range(0, 100, 10)]
    assert times == sorted(times)
    assert expected_attempt_s("robe-timer", 90, timer_s=1.0, hold_s=0) <= 1.0
    assert expected_attempt_s("robe-sim", 100, hold_s=0.3) == pytest.approx(0.3)


def test_bands_grow_by_a_factor_of_four():
    assert band(0.5) == 0 and band(1.0) == 1 and band(3.9) == 1 and band(4.0) == 2 and band(127) == 4
    assert band(math.nan) == 0


def test_tail_risk():
    # A dead default path never gets to the request; a clean one never loses it; RobE_SIM races path 2.
    assert tail_risk("tcp", 100) == 0 and tail_risk("tcp", 0) == 0 and tail_risk("robe-sim", 90) == 0
    # At 90 % loss: SYN through (1 - 0.9^7), then 10 request transmissions lost (0.2 s doubling > 127 s).
    assert tail_risk("mptcp", 90) == pytest.approx((1 - 0.9**7) * 0.9**10)
    assert tail_risk("robe-timer", 80) == pytest.approx(0.2 * 0.8**10)
    risks = [tail_risk("tcp", loss) for loss in range(0, 100, 10)]
    assert risks == sorted(risks)


def _key(run):
    return (
        band(tail_risk(run.strategy, run.loss_pct), RISK_FLOOR),
        band(expected_attempt_s(run.strategy, run.loss_pct)),
    )


def test_long_first_keeps_every_run_once_and_the_random_order_inside_a_band():
    profile = load_profile("paper")
    runs = expand_runs(profile)
    ordered = order_long_first(runs, timer_s=profile.timer_s, hold_s=0.3)
    assert Counter(r.run_id for r in ordered) == Counter(r.run_id for r in runs)
    keys = [_key(r) for r in ordered]
    assert keys == sorted(keys, reverse=True)
    # The riskiest cells first (a request lost past the SYN give-up), the certain 127 s ones next.
    assert ordered[0].strategy in ("tcp", "mptcp") and ordered[0].loss_pct >= 80
    dead = [i for i, r in enumerate(ordered) if r.strategy in ("tcp", "mptcp") and r.loss_pct == 100]
    short = [i for i, r in enumerate(ordered) if r.loss_pct == 0]
    assert max(dead) < min(short)
    # Inside a band: the profile's random order (a stable sort), so strategies and loss levels mix.
    top = [r for r in ordered if _key(r) == keys[0]]
    assert top == [r for r in runs if r in top]
    assert len({(r.strategy, r.loss_pct) for r in top[:20]}) > 1


def test_canary_error_and_flag():
    assert canary_error_ms([20.3, 20.4, 25.0], 20.0) == pytest.approx(0.4)
    assert canary_error_ms([], 20.0) is None
    assert worst(0.3, -1.2) == -1.2 and worst(0.3, None) == math.inf
    assert not flagged(0.9) and flagged(1.1) and flagged(-1.5) and flagged(math.inf)
    assert row_fields(0.4567) == {"canary_ms": "0.457", "canary_flagged": 0}
    assert row_fields(math.inf) == {"canary_ms": "", "canary_flagged": 1}
    # Rows before the canary existed read as NA (analysis.schema): neither flagged nor measured.
    assert count_flagged(pd.Series([True, False, pd.NA, pd.NA], dtype="boolean")) == (1, 2)


def test_list_schedule_wall_time():
    # Two networks built one after the other (1 s each): the long attempt decides the end.
    assert list_schedule([10.0, 1.0, 1.0], 2, 1.0) == pytest.approx(11.0)
    # Long one last: it starts only when a network is free.
    assert list_schedule([1.0, 1.0, 10.0], 2, 1.0) == pytest.approx(12.0)


def test_cluster_specs():
    assert parse_cluster("local:2").local_workers == 2
    assert parse_cluster("tcp://10.1.2.3:8786").address == "tcp://10.1.2.3:8786"
    for bad in ("local:0", "local:x", "local:65", "tcp://host", "10.1.2.3:8786", ""):
        with pytest.raises(ValueError, match="--cluster"):
            parse_cluster(bad)


def _fact(host, kernel, backend="userspace", root=True, mptcp=True):
    return {"host": host, "kernel": kernel, "link_backend": backend, "root": root, "mptcp": mptcp}


def test_hosts_must_agree_unless_told():
    same = {"w1": _fact("a", "6.18"), "w2": _fact("b", "6.18")}
    assert check_hosts(same, False)["kernels"] == ["6.18"]
    mixed = {"w1": _fact("a", "6.18"), "w2": _fact("b", "6.1")}
    with pytest.raises(ClusterError, match="kernels"):
        check_hosts(mixed, False)
    assert check_hosts(mixed, True)["kernels"] == ["6.1", "6.18"]
    with pytest.raises(ClusterError, match="link backends"):
        check_hosts({"w1": _fact("a", "6.18"), "w2": _fact("b", "6.18", "netem")}, False)
    with pytest.raises(ClusterError, match="root"):
        check_hosts({"w1": _fact("a", "6.18", root=False)}, True)
    with pytest.raises(ClusterError, match="no workers"):
        check_hosts({}, False)
    code = {"commit": "a" * 40, "dirty": False}
    ours = {"w1": {**_fact("a", "6.18"), "git": code}}
    assert check_hosts(ours, False, code)["hosts"] == ["a"]
    other = {"w1": {**_fact("a", "6.18"), "git": {"commit": "b" * 40, "dirty": False}}}
    with pytest.raises(ClusterError, match="same commit"):
        check_hosts(other, False, code)
    assert check_hosts(other, False, code, allow_mixed_code=True)["hosts"] == ["a"]
    dirty = {"w1": {**_fact("a", "6.18"), "git": {**code, "dirty": True, "diff_sha256": "f00"}}}
    with pytest.raises(ClusterError, match="aaaaaaaaaaaa\\+f00"):
        check_hosts(dirty, False, code)


def test_network_pool_builds_once_per_thread_and_tears_down():
    pool = NetworkPool()
    pool._cleaned = True  # no clean-up of the machine in a unit test
    torn_down: list[int] = []

    def build(index: int, stack: contextlib.ExitStack) -> str:
        stack.callback(torn_down.append, index)
        return f"net{index}"

    first = pool.acquire("k", build)
    second = pool.acquire("k", build)  # the first is busy: a second one is built
    assert (first, second) == ("net0", "net1") and pool.busy() == ["net0", "net1"]
    pool.release("k", first)
    assert pool.acquire("k", build) == "net0"  # reused, not rebuilt
    assert pool.built == 2

    barrier = threading.Barrier(4)
    got = []

    def use() -> None:
        net = pool.acquire("other", build)
        got.append(net)
        barrier.wait()
        pool.release("other", net)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got)) == 4 and pool.built == 6
    assert pool.close() == 6 and sorted(torn_down) == list(range(6)) and pool.all_items() == []


def test_a_failed_build_leaves_nothing_open():
    pool = NetworkPool()
    pool._cleaned = True
    closed: list[int] = []

    def broken(index: int, stack: contextlib.ExitStack) -> str:
        stack.callback(closed.append, index)
        raise RuntimeError("no network")

    with pytest.raises(RuntimeError):
        pool.acquire("k", broken)
    assert closed == [0] and pool.all_items() == []


def _typed_runs(rows, tmp_path):
    """Rows written and read back through the experiment 1 schema (as the report reads them)."""
    from analysis.schema import EXPERIMENT1

    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EXPERIMENT1.names)
        for row in rows:
            writer.writerow(EXPERIMENT1.format_row({**dict.fromkeys(EXPERIMENT1.names, ""), **row}))
    return EXPERIMENT1.read(path)


def test_report_section_counts_flagged_and_censored_rows(tmp_path):
    from analysis.sweep_timing import sweep_lines

    meta = {"invocations": [{"wall_time_s": 700.4, "arguments": {"jobs": 64, "schedule": "long-first",
                                                                 "timeout_s": 600}}]}  # fmt: skip
    row = {"run_id": "tcp-L90-r00", "strategy": "tcp", "loss_pct": "90", "repetition": "0", "seed": "1",
           "worker": "0", "status": "ok", "setup_ms": "40", "accept_ms": "40", "canary_ms": "0.3",
           "canary_flagged": "1", "retries": "0", "host": "h", "kernel": "6.18"}  # fmt: skip
    rows = [
        {**row, "canary_flagged": "0"},
        {**row, "canary_ms": "1.8"},
        {**row, "status": "censored", "setup_ms": "", "accept_ms": "", "canary_flagged": "0", "retries": "1"},
    ]
    text = "\n".join(sweep_lines(_typed_runs(rows, tmp_path), meta))
    assert "Wall time 700 s" in text and "64 networks, order long-first, timeout 600" in text
    assert "1 attempt(s) censored" in text and "1 of 3 rows flagged" in text and "+1.80 ms" in text
    assert "tcp 90 % (1)" in text and "1 attempt(s) ran again" in text and "h (6.18)" in text
    before = {key: row[key] for key in ("run_id", "strategy", "loss_pct", "repetition", "seed", "worker", "status",
                                        "setup_ms", "accept_ms")}  # fmt: skip
    assert "not recorded" in "\n".join(sweep_lines(_typed_runs([before], tmp_path), {"invocations": []}))


def test_model_is_censored_like_the_sweep():
    from analysis.experiment1_cells import model_settings, setup_times

    meta = {"profile": {"path1": {"rtt_ms": 20}, "path2": {"rtt_ms": 20}, "timer_s": 1.0, "loss_direction": "up"},
            "network": {"sysctls": {"client": {"net.ipv4.tcp_syn_retries": "6"}}}}  # fmt: skip
    plain = model_settings(meta)
    censored = model_settings({**meta, "invocations": [{"arguments": {"timeout_s": 600}}, {"arguments": {}}]})
    assert plain.censor_s is None and censored.censor_s == 600
    full, cut = setup_times("mptcp", 90, plain), setup_times("mptcp", 90, censored)
    assert full is not None and cut is not None
    # Only set-ups within 600 s count: a smaller mean, a smaller success probability. The request can
    # come up to 15 minutes late; accept() never past the SYN/ACK give-up, well within 600 s.
    assert cut.request.mean_s < full.request.mean_s and cut.success < full.success
    assert cut.request.times.max() <= 600 < full.request.times.max()
    assert cut.accept.mean_s == full.accept.mean_s and full.accept.times.max() <= 600
    zero_cut, zero_full = setup_times("tcp", 0, censored), setup_times("tcp", 0, plain)
    assert zero_cut is not None and zero_full is not None
    assert zero_cut.request.mean_s == pytest.approx(zero_full.request.mean_s)
    assert zero_cut.success == pytest.approx(zero_full.success) == pytest.approx(1.0)


def test_wait_readable_watches_descriptors_above_1023():
    import os

    from topologies.shell import wait_readable

    read_end, write_end = os.pipe()
    high = os.dup2(read_end, 1500)  # a sweep of 64 networks holds about 1,300 descriptors
    try:
        assert wait_readable(high, 0.01) is False
        os.write(write_end, b"x")
        assert wait_readable(high, 1.0) is True
    finally:
        for fd in (high, read_end, write_end):
            os.close(fd)


def test_bench_sweep_redraws_a_stored_folder_byte_for_byte(tmp_path):
    import shutil
    from pathlib import Path

    from experiments.bench_sweep import main

    stored = Path(__file__).resolve().parents[2] / "results" / "sweep-bench" / "20261128T093826Z"
    folder = tmp_path / "bench"
    shutil.copytree(stored, folder)
    (folder / "bench.md").unlink()
    assert main(["--replot", str(folder)]) == 0  # no root needed
    assert (folder / "bench.md").read_text() == (stored / "bench.md").read_text()
    assert (folder / "bench.png").read_bytes() == (stored / "bench.png").read_bytes()
