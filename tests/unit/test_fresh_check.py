"""make fresh-check's pure parts: the root's recipe and cache key, the commands, the report."""

import json
import os
import sys
from pathlib import Path

import pytest

from provision.container import (
    Layers,
    StepResult,
    extra_certificates,
    mounts_under,
    nspawn_command,
    overlay_mount_command,
    processes_rooted_in,
    run_streaming,
)
from provision.fresh_check import (
    STEPS,
    FreshCheckError,
    Report,
    duration,
    foreign_owned,
    recorded_commit,
    resolve_commit,
    user_ids,
)
from provision.rootfs import RootRecipe, cache_folder


def test_recipe_is_a_fresh_users_machine_and_its_hash_names_the_cache():
    recipe = RootRecipe()
    argv = recipe.debootstrap_command(Path("/c/x/root"))
    assert argv[:3] == ["debootstrap", "--variant=minbase", "--include=git,make,sudo,ca-certificates"]
    assert argv[-3:] == ["bookworm", "/c/x/root", "http://deb.debian.org/debian"]
    script = recipe.configure_script()
    assert "useradd --create-home --shell /bin/bash --groups sudo robe" in script
    assert "NOPASSWD" in script and "rm -rf /var/lib/apt/lists/*" in script
    assert "bookworm-security main" in script
    # Nothing of robe-lab's own package list is in the root: the README's commands install it.
    assert "mininet" not in recipe.text() and "curl" not in recipe.text()
    assert cache_folder(Path("/var/cache/robe-lab"), recipe).name == f"fresh-root-{recipe.key()}"
    assert len(recipe.key()) == 12 and recipe.key() == RootRecipe().key()
    assert RootRecipe(include=("git", "make", "sudo", "ca-certificates", "curl")).key() != recipe.key()


def test_overlay_keeps_the_cached_root_read_only_below():
    layers = Layers.under(Path("/cache/root"), Path("/runs/r1"))
    assert overlay_mount_command(layers) == [
        "mount", "-t", "overlay", "overlay", "-o",
        "lowerdir=/cache/root,upperdir=/runs/r1/upper,workdir=/runs/r1/work", "/runs/r1/merged",
    ]  # fmt: skip


def test_nspawn_types_the_command_as_the_user_in_a_login_shell_with_all_capabilities():
    argv = nspawn_command(Path("/runs/r1/merged"), "rl-fresh-1", "fresh-debian12", "robe", "cd ~/robe-lab && make test")
    assert argv[:5] == ["setpriv", "--pdeathsig", "TERM", "--", "systemd-nspawn"]
    assert "--directory=/runs/r1/merged" in argv
    assert {"--capability=all", "--register=no", "--user=robe", "--as-pid2"} <= set(argv)
    assert "--private-network" not in argv  # the set-up needs the host's network (mirror, PyPI)
    assert argv[-3:] == ["bash", "-lc", "cd ~/robe-lab && make test"]


def test_the_commands_are_the_readmes():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert STEPS[:2] == ("sudo make experiment1 PROFILE=quick", "make test")
    for command in STEPS:
        assert command in readme, command


def test_extra_certificates_are_the_hosts_beyond_the_roots():
    def pem(body):
        return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----"

    host = "\n".join([pem("AAA"), pem("PROXY"), pem("BBB"), pem("PROXY")])
    root = "\n".join([pem("AAA"), pem("BBB")])
    assert extra_certificates(host, root) == [pem("PROXY")]
    assert extra_certificates(root, root) == []


def test_mounts_under_reads_a_mount_table(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 0:21 / /proc rw - proc proc rw\n"
        "90 1 0:50 / /var/tmp/fc/run1/merged rw - overlay overlay rw\n"
        "91 1 0:51 / /var/tmp/fc/run10 rw - tmpfs tmpfs rw\n"
    )
    assert mounts_under(Path("/var/tmp/fc/run1"), table) == ["/var/tmp/fc/run1/merged"]
    assert mounts_under(Path("/nothing"), table) == []


def test_report_passes_only_when_every_command_passed_and_the_commit_was_recorded():
    report = Report(commit="a" * 40, revision="HEAD", dirty_warning="", recipe="Debian", root_line="/c (cached)")
    report.steps = [StepResult(c, 0, 61.4) for c in STEPS]
    report.recorded_commit = f"{'a' * 40} (clean)"
    assert not report.passed  # the user's results not checked
    report.foreign_owned = ["results/experiment2/quick/runs.csv"]
    assert not report.passed
    report.foreign_owned = []
    assert report.passed
    text = "\n".join(report.lines())
    assert "[1] sudo make experiment1 PROFILE=quick" in text and "1 min 01 s" in text
    assert "[4] make experiment2 PROFILE=quick" in text and "every file the user's" in text
    assert text.endswith("fresh-check: PASSED\nfresh-check: 4 passed, 0 failed")
    report.steps[1] = StepResult("make test", 2, 30.0)
    assert not report.passed and report.lines()[-2:] == ["fresh-check: FAILED", "fresh-check: 3 passed, 1 failed"]
    report.steps[1] = StepResult("make test", 0, 30.0)
    report.recorded_commit = f"{'a' * 40} (dirty)"
    assert not report.passed
    report.recorded_commit = f"{'a' * 40} (clean)"
    report.leftovers = ["1 process(es) of the container (killed)"]
    assert not report.passed
    report.leftovers = []
    report.steps = report.steps[:1]
    assert not report.passed and "[3] sudo make integration-test" in "\n".join(report.lines())
    report.interrupted = True
    assert report.lines()[-2] == "fresh-check: INTERRUPTED"


def test_duration():
    assert duration(41.4) == "41 s"
    assert duration(125) == "2 min 05 s"


def test_user_results_must_belong_to_the_user(tmp_path):
    assert foreign_owned(tmp_path, os.getuid()) == ["results/experiment2/quick (missing)"]
    folder = tmp_path / "results" / "experiment2" / "quick"
    folder.mkdir(parents=True)
    (folder / "runs.csv").write_text("")
    assert foreign_owned(tmp_path, os.getuid()) == []
    assert foreign_owned(tmp_path, os.getuid() + 1) == [
        "results/experiment2/quick",
        "results/experiment2/quick/runs.csv",
    ]


def test_recorded_commit_reads_the_experiments_metadata(tmp_path):
    folder = tmp_path / "results" / "experiment1" / "quick"
    folder.mkdir(parents=True)
    assert recorded_commit(tmp_path) == ""
    (folder / "metadata.json").write_text(json.dumps({"git": {"commit": "abc", "dirty": False}}))
    assert recorded_commit(tmp_path) == "abc (clean)"
    (folder / "metadata.json").write_text(json.dumps({"git": {"commit": None, "error": "not a git repository"}}))
    assert recorded_commit(tmp_path) == "none (not a git repository)"


def test_revision_must_be_a_commit():
    commit, _ = resolve_commit("HEAD")
    assert len(commit) == 40
    with pytest.raises(FreshCheckError, match="not a commit"):
        resolve_commit("no-such-revision-xyz")


def test_user_ids_from_the_roots_passwd(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/bash\nrobe:x:1000:1001::/home/robe:/bin/bash\n")
    assert user_ids(tmp_path, "robe") == (1000, 1001)
    with pytest.raises(FreshCheckError, match="'nobody' missing"):
        user_ids(tmp_path, "nobody")


def test_run_streaming_passes_lines_and_stops_at_the_time_limit():
    lines: list[str] = []
    code = run_streaming([sys.executable, "-c", "print('a'); print('b')"], {}, 30, lines.append)
    assert code == 0 and lines == ["a", "b"]
    code = run_streaming([sys.executable, "-c", "import time; print('x', flush=True); time.sleep(60)"], {}, 1.0,
                         lines.append)  # fmt: skip
    assert code is None and lines[-1] == "x"


def test_processes_are_found_by_their_root_folder(tmp_path):
    assert processes_rooted_in(tmp_path) == []
    assert os.getpid() in processes_rooted_in(Path("/"))
