"""Start-up failures end in bounded time with one line naming what did not start, and leave nothing.

A host's start command is made to fail for real: its ``mnexec`` is asked to attach the shell to
the namespaces of a process that has exited (mnexec: "/proc/<pid>/ns/net: No such file or
directory"), or to run something that never prompts. A probe reflector meets a port already taken.
"""

import os
import subprocess
import sys
import time

import pytest

from experiments.validate_links import PROBE_PORT, ProbeRound
from topologies.cleanup import find_our_processes
from topologies.fig3 import SERVER_B1, Fig3Config, Fig3Network
from topologies.hosts import BoundedHost, HostStartError
from topologies.links import PROJECT_ROOT
from topologies.shell import run
from topologies.startup import StartupError

pytestmark = pytest.mark.root


def exited_pid() -> int:
    """The pid of a process that has exited (and been reaped): nothing can attach to it."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


class UnattachableHost(BoundedHost):
    """Its shell's mnexec attaches to the namespaces of an exited process: mnexec fails for real."""

    def _popen(self, cmd, **params):
        if self.shell is None:  # the shell's start command (Mininet's Node.startShell)
            cmd = [cmd[0], cmd[1], "-a", str(exited_pid()), *cmd[2:]]
        return super()._popen(cmd, **params)


class SilentHost(BoundedHost):
    """Its start command runs but never prompts (like a shell stuck before its first prompt)."""

    START_TIMEOUT_S = 2.0

    def _popen(self, cmd, **params):
        if self.shell is None:
            cmd = [cmd[0], cmd[1], "sleep", "60"]
        return super()._popen(cmd, **params)


def _fig3_with(host_class):
    return type(f"Fig3With{host_class.__name__}", (Fig3Network,), {"HOST_CLASS": host_class})


def _leftovers(tag):
    processes = [cmd for _, cmd in find_our_processes() if tag in cmd]
    namespaces = [n for n in run(["ip", "netns", "list"]).stdout.split() if tag in n]
    links = [n for n in run(["ip", "-o", "link", "show"]).stdout.split() if tag in n]
    return processes + namespaces + links


def test_failing_host_start_command_is_one_line_naming_host_and_error():
    started = time.monotonic()
    with pytest.raises(HostStartError) as caught:
        _fig3_with(UnattachableHost)(Fig3Config())
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message
    assert "Mininet host rl-" in message and "-client did not start" in message, message
    assert "mnexec -cdn -a" in message and "exited 1" in message, message
    assert "ns/net: No such file or directory" in message, message
    # The failed start is noticed when mnexec exits, long before the bound.
    assert elapsed < BoundedHost.START_TIMEOUT_S / 2, elapsed
    tag = message.split("Mininet host ")[1].split("-client", maxsplit=1)[0]
    assert not _leftovers(tag)


def test_host_that_never_prompts_fails_at_the_bound():
    started = time.monotonic()
    with pytest.raises(
        HostStartError, match=r"-client did not start: 'mnexec -cdn sleep 60' gave no shell prompt within 2 s"
    ):
        _fig3_with(SilentHost)(Fig3Config())
    elapsed = time.monotonic() - started
    assert SilentHost.START_TIMEOUT_S <= elapsed < SilentHost.START_TIMEOUT_S + 10, elapsed
    assert not [cmd for _, cmd in find_our_processes() if cmd.startswith("sleep 60")]


EXPERIMENT_WITH_FAILING_HOST = """
import sys
from tests.integration.test_startup_failures import UnattachableHost
from topologies.fig3 import Fig3Network
Fig3Network.HOST_CLASS = UnattachableHost
from experiments.experiment1 import main
sys.exit(main(sys.argv[1:]))
"""


def test_experiment1_with_a_failing_host_prints_one_line_and_exits_non_zero(tmp_path):
    started = time.monotonic()
    argv = [sys.executable, "-c", EXPERIMENT_WITH_FAILING_HOST, "--profile", "quick", "-j", "2",
            "--out", str(tmp_path / "quick")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: Mininet host rl-") and "did not start" in lines[0], lines[0]
    assert "No such file or directory" in lines[0] and "Traceback" not in done.stderr
    assert elapsed < 60, elapsed


def test_probe_reflector_that_cannot_bind_is_one_line():
    with Fig3Network(Fig3Config()) as net:
        holder = net.popen(net.server, [sys.executable, "-c", (
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{SERVER_B1}',{PROBE_PORT}));print('bound',flush=True);time.sleep(60)")],
            stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert holder.stdout is not None and holder.stdout.readline().strip() == "bound"
        with pytest.raises(StartupError) as caught:
            ProbeRound(net)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"probe reflector in {net.names['server']} did not start: exited 1"), message
    assert "Address already in use" in message, message
