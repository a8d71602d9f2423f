"""The Debian package list is whole: every program the code runs is listed, and set-up installs them all."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provision.packages import (
    FRESH_CHECK_LIST,
    PACKAGE_LIST,
    PROJECT_ROOT,
    PackageListError,
    candidate_programs,
    installed_packages,
    listed_programs,
    programs_in_code,
    python_files,
    read_package_list,
)

#: Where set-up's programs live; a normal user's PATH lacks the sbin folders (root's has them).
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


#: Names the scan finds that the code never runs, and why.
NOT_RUN = {
    "python": "tests/unit/test_cleanup_scope.py classifies such command lines; the code runs sys.executable",
    "factor": "analysis/ablation.py: a pandas column name (coreutils has a program of that name)",
}


def _resolves_outside_venv(name: str) -> bool:
    """A program on this machine that is not one of the venv's own (python, pytest, ruff ...)."""
    found = shutil.which(name, path=SEARCH_PATH)
    return found is not None and not Path(found).resolve().is_relative_to(Path(sys.prefix).resolve())


def test_every_program_the_code_runs_is_in_the_list():
    # The project's list, and the developer tools of make fresh-check (provision/ runs those).
    listed = listed_programs([*read_package_list(), *read_package_list(FRESH_CHECK_LIST)])
    candidates = programs_in_code(python_files())
    # Programs found on this machine: whoever adds a program has it installed, so a missing line
    # shows up on their machine first. Names that are no program here ("delay", "mptcp") are data.
    unlisted = {
        name: where
        for name, where in candidates.items()
        if name not in listed and name not in NOT_RUN and _resolves_outside_venv(name)
    }
    assert not unlisted, f"programs run by the code but missing from {PACKAGE_LIST.name}: {unlisted}"


def test_the_scan_sees_the_programs_the_code_is_known_to_run():
    candidates = programs_in_code(python_files())
    for program in ("ip", "tc", "iptables", "nsenter", "sysctl", "ethtool", "git", "iperf3", "wget", "curl",
                    "openssl", "dnsmasq", "unshare", "getent"):  # fmt: skip
        assert program in candidates, program


def test_every_listed_package_and_program_is_there_after_setup():
    entries = read_package_list()
    packages = [entry.package for entry in entries]
    installed = installed_packages(packages)
    assert set(packages) <= installed, f"not installed: {sorted(set(packages) - installed)}; run: make setup"
    missing = [p for p in listed_programs(entries) if shutil.which(p, path=SEARCH_PATH) is None]
    assert not missing, f"listed programs not found after set-up: {missing}"


def test_setup_installs_exactly_the_listed_packages():
    done = subprocess.run(["bash", "scripts/setup.sh", "--list-packages"], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, check=True)  # fmt: skip
    assert done.stdout.split() == [entry.package for entry in read_package_list()]


def test_nothing_listed_twice_and_everyone_says_who_runs_it():
    entries = read_package_list()
    assert len({e.package for e in entries}) == len(entries)
    programs = [p for e in entries for p in e.programs]
    assert len(set(programs)) == len(programs)
    assert all(e.used_by for e in entries)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("curl  # tests", "expected '<program>"),
        ("curl curl extra  # tests", "expected '<program>"),
        ("curl Curl_Pkg  # tests", "not a Debian package name"),
        ("curl curl", "say who runs"),
        ("cu rl;x curl  # t", "expected"),
        ("curl,,wget curl  # t", "names separated by ','"),
    ],
)
def test_malformed_lines_are_named(tmp_path, line, problem):
    path = tmp_path / "debian-packages.txt"
    path.write_text(f"# header\n\n{line}\n")
    with pytest.raises(PackageListError, match=problem) as caught:
        read_package_list(path)
    assert "debian-packages.txt:3" in str(caught.value)


def test_a_package_listed_twice_is_an_error(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("curl curl  # a\nwget curl  # b\n")
    with pytest.raises(PackageListError, match=r"list\.txt:2: package 'curl' is already listed on line 1"):
        read_package_list(path)


def test_candidates_cover_argv_literals_executable_defaults_and_which_loops():
    source = """
import shutil
def build(x):
    return ["tshark", "-i", x]
def dns(executable: str = "dnsmasq", *, program="chromium"):
    pass
def check():
    for tool in ("wget", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(tool)
    shutil.which("openssl")
    run(["tcpdump", "-n"])
    record = ("seq", int)
"""
    names = [name for name, _ in candidate_programs(source)]
    for program in ("tshark", "dnsmasq", "chromium", "wget", "curl", "openssl", "tcpdump"):
        assert program in names, program
    assert "seq" not in names
