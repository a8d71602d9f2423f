"""The robe-lab command: every make target and endpoint as a subcommand, help with defaults and no
docstring markup, the sudo re-run of root commands, and the Makefile calling it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robe_lab.cli import COMMANDS, main, sudo_argv, wants_help
from robe_lab.cliparse import plain
from robe_lab.paths import ROOT_ENV, project_root

ROOT = project_root()
MAKE_TARGETS = ("experiment1", "experiment2", "ablation", "validate-links", "validate-transport", "bench", "soak",
                "plots", "compare", "record-sites", "clean-net", "fresh-check", "shell")  # fmt: skip


def test_console_script_lists_every_command():
    script = Path(sys.executable).parent / "robe-lab"
    assert script.exists(), "make setup installs the package: .venv/bin/robe-lab"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    for name in (*MAKE_TARGETS, "serve", "connect", "agent", "serve-user"):
        assert re.search(rf"^  {re.escape(name)} ", done.stdout, re.M), name
    assert "``" not in done.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_defaults_and_no_markup(name, capsys):
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: robe-lab {name}"), text[:80]
    assert "``" not in text and ":func:" not in text
    if name in ("experiment1", "experiment2", "validate-links", "bench", "shell", "plots"):
        assert "default" in text


def test_experiment1_jobs_default_is_the_makefiles(capsys):
    main(["experiment1", "--help"])
    assert "(default: 16)" in capsys.readouterr().out
    assert "JOBS ?=" not in (ROOT / "Makefile").read_text()  # the command's default is the one default


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        main(["experiment3"])
    assert done.value.code == 2 and "invalid choice: 'experiment3'" in capsys.readouterr().err


def test_cleanup_help_prints_help_and_cleans_nothing():
    done = subprocess.run([sys.executable, "-m", "topologies.cleanup", "--help"], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m topologies.cleanup")
    assert "removed" not in done.stdout.lower() and "leftover" not in done.stdout.lower()


def test_sudo_argv_keeps_what_the_code_reads():
    argv = sudo_argv("experiment2", ["--profile", "quick"], {"PYTHONPATH": "/src", "HOME": "/home/u"}, "/v/bin/python")
    assert argv[:3] == ["sudo", "--", "env"]
    assert f"{ROOT_ENV}={ROOT}" in argv and "PYTHONPATH=/src" in argv and "PYTHONDONTWRITEBYTECODE=1" in argv
    assert not any(a.startswith("HOME=") for a in argv)
    assert argv[-6:] == ["/v/bin/python", "-m", "robe_lab", "experiment2", "--profile", "quick"]
    assert sudo_argv("x", [], {ROOT_ENV: "/data"}, "py").count(f"{ROOT_ENV}=/data") == 1


def test_help_needs_no_root():
    assert wants_help(["--profile", "quick", "-h"]) and not wants_help(["--profile", "quick"])


@pytest.mark.skipif(shutil.which("runuser") is None or os.geteuid() != 0, reason="needs root to become nobody")
def test_a_root_command_as_a_normal_user_goes_through_sudo():
    """As ``nobody`` (no sudo rights) the command asks sudo, which refuses: the re-run was attempted
    and nothing ran as nobody."""
    argv = ["runuser", "-u", "nobody", "--", sys.executable, "-m", "robe_lab", "clean-net"]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd="/", env=env,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode != 0
    assert "robe-lab clean-net: needs root (network namespaces): running it through sudo" in done.stderr
    assert "sudo" in done.stderr.splitlines()[-1]  # sudo's own refusal (no password, no rights)


def test_makefile_targets_call_robe_lab():
    makefile = (ROOT / "Makefile").read_text()
    for name in MAKE_TARGETS:
        recipe = re.search(rf"^{re.escape(name)}:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert recipe, name
        assert f"$(ROBE_LAB) {name}" in recipe.group(1), (name, recipe.group(1))
        assert "require_root" not in recipe.group(1)  # robe-lab goes through sudo itself


def test_plain_removes_rest_markup():
    assert plain("``make plots``: see :func:`analysis.plots.main`") == "make plots: see analysis.plots.main"


def test_the_cli_takes_roles_and_tagged_node_names():
    from robe_lab.shell import cli_command

    nodes = {"client": "rl-o12-ab12cd-client", "server": "rl-o12-ab12cd-server"}
    assert cli_command("client ip -br addr", nodes) == ("rl-o12-ab12cd-client", "ip -br addr")
    assert cli_command("rl-o12-ab12cd-server  ss -tn ", nodes) == ("rl-o12-ab12cd-server", "ss -tn")
    assert cli_command("client", nodes) is None  # no command: Mininet's own message
    assert cli_command("nodes", nodes) is None and cli_command("h1 ping h2", nodes) is None
