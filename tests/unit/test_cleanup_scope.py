"""Scoped clean-up recognises only robe-lab's things, and removes only what dead runs left."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from topologies.cleanup import (
    RUN_ENV,
    CleanupReport,
    Leftover,
    _sort,
    is_ours,
    our_processes,
    owned_name,
    owner_alive,
    owner_of,
    read_cmdline,
    read_run_env,
)


def test_our_mininet_shell_is_ours():
    assert is_ours(["bash", "--norc", "--noediting", "-is", "mininet:rl-3f2c1a-client"])
    assert is_ours(["bash", "--norc", "--noediting", "-is", "mininet:rl-o123-3f2c1a-client"])


def test_tagged_helper_is_ours():
    assert is_ours(["/x/python", "-m", "topologies.tapwire", "--tag", "rl-3f2c1a-p1-a1"])


def test_other_people_are_not_ours():
    assert not is_ours(["bash", "--norc", "-is", "mininet:h1"])
    assert not is_ours(["python", "--tag", "other-thing"])
    assert not is_ours(["python", "rl-3f2c1a"])
    assert not is_ours([])


def test_names_carry_their_owner_and_older_names_carry_none():
    name = owned_name("exp2")
    assert name.startswith(f"rl-o{os.getpid()}-exp2-") and owner_of(name) == os.getpid()
    assert owner_of(owned_name(owner=42) + "-client") == 42
    assert owner_of("rl-123456-client") is None  # an older tag that happens to be all digits
    assert owner_of("rl-probe-77-abc") is None and owner_of("other") is None


def test_a_killed_owner_is_dead_even_before_it_is_reaped():
    child = subprocess.Popen(["sleep", "30"])
    assert owner_alive(child.pid) and owner_alive(os.getpid())
    child.kill()
    time.sleep(0.2)  # a zombie now: killed, not reaped
    assert not owner_alive(child.pid)
    child.wait()
    assert not owner_alive(child.pid)


def test_processes_marked_with_a_run_are_found_and_only_a_dead_owners_are_chosen():
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    started = {
        "dead": subprocess.Popen(["sleep", "30"], env={**os.environ, RUN_ENV: owned_name(owner=dead.pid)}),
        "live": subprocess.Popen(["sleep", "30"], env={**os.environ, RUN_ENV: owned_name()}),
        "old": subprocess.Popen(["sleep", "30"], env={**os.environ, RUN_ENV: "rl-abcdef"}),
    }
    try:
        found = {x.name: x for x in our_processes()}
        assert all(str(proc.pid) in found for proc in started.values()), found
        mine = {key: found[str(proc.pid)] for key, proc in started.items()}
        assert (mine["dead"].owner, mine["live"].owner, mine["old"].owner) == (dead.pid, os.getpid(), None)
        report = CleanupReport()
        chosen = _sort(list(mine.values()), everything=False, report=report)
        assert chosen == [mine["dead"]] and report.live == [mine["live"]] and report.unowned == [mine["old"]]
        assert "left alone 1 item(s) of running" in report.summary()
    finally:
        for proc in started.values():
            proc.kill()
            proc.wait()


def test_the_report_names_what_it_removed():
    report = CleanupReport(
        removed=[Leftover("process", "12", "sleep 30", 7), Leftover("folder", "/tmp/rl-o7-x", "", 7)]
    )
    assert report.processes == [(12, "sleep 30")] and report.temp_dirs == ["/tmp/rl-o7-x"]
    assert "clean-net: process 12 (owner 7): sleep 30" in report.summary()
    assert CleanupReport().empty() and "no leftovers" in CleanupReport().summary()


@pytest.mark.root
def test_processes_of_another_pid_namespace_are_never_judged():
    # A container (make fresh-check's) runs robe-lab with owner PIDs of its own PID namespace: from
    # here they look dead, and a clean-up on the host would kill a live run inside it.
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    inside = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "env",
                               f"{RUN_ENV}={owned_name(owner=dead.pid)}", "sleep", "30"])  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        sleeper = None
        while sleeper is None and time.monotonic() < deadline:
            children = [int(p) for p in Path(f"/proc/{inside.pid}/task/{inside.pid}/children").read_text().split()]
            sleeper = next((c for c in children if read_cmdline(c)[:1] == ["sleep"]), None)
            time.sleep(0.02)
        assert sleeper is not None and read_run_env(sleeper) is not None
        assert str(sleeper) not in {x.name for x in our_processes()}
    finally:
        inside.kill()
        inside.wait()
