"""robe-lab shell, driven as a user would (commands on standard input): the replayed page loads
through the chosen strategy's proxy, and nothing is left once the shell exits or is stopped."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robe.client import ConnectionRecord
from robe_lab.paths import project_root
from topologies.cleanup import our_temp_dirs, processes_of
from topologies.shell import run

pytestmark = pytest.mark.root

ROBE_LAB = str(Path(sys.executable).parent / "robe-lab")


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([ROBE_LAB, "shell", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=project_root(), start_new_session=True)  # fmt: skip


def _assert_nothing_left(pid: int) -> None:
    assert not processes_of(pid)  # by the owner in names, command lines and the run's environment
    assert not [d for d in our_temp_dirs() if f"rl-o{pid}-" in d]
    assert f"rl-o{pid}" not in run(["ip", "netns", "list"]).stdout
    mininet = [p for p in Path("/proc").glob("[0-9]*/cmdline") if f"mininet:rl-o{pid}".encode() in _read(p)]
    assert not mininet


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_fig7_shell_loads_the_replayed_page_through_robe_sim():
    shell = _start("fig7", "--strategy", "robe-sim", "--site", "google.com")
    script = "\n".join([
        'curl -sS -o /dev/null -w "status=%{http_code} bytes=%{size_download}\\n" "$ROBE_URL"',
        'echo "url=$ROBE_URL"',
        'grep -c \'"event": "accepted"\' "$ROBE_LOGS/proxy-robe-sim.log"',
        "getent hosts www.google.com",
        "exit",
    ]) + "\n"  # fmt: skip
    out, err = shell.communicate(script, timeout=180)
    assert shell.returncode == 0, err[-2000:]
    lines = out.splitlines()
    assert lines[0].startswith("status=200 bytes=") and int(lines[0].split("bytes=")[1]) > 10_000, out
    assert lines[1].startswith("url=https://www.google.com/"), out
    assert int(lines[2]) >= 1  # the connection went through the client proxy (robe-sim)
    assert lines[3].split()[0].startswith("198.19."), out  # the private resolver: the replay's origin
    assert "robe-sim" in err and "torn down" in err
    _assert_nothing_left(shell.pid)


def _wait_up(shell: subprocess.Popen[str]) -> None:
    assert shell.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = shell.stderr.readline()
        if " up in " in line:
            return
        assert line, "robe-lab shell ended before the network was up"
    pytest.fail("robe-lab shell: network not up within 120 s")


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_fig3_shell_stopped_leaves_nothing(how):
    shell = _start("fig3", "--strategy", "mptcp", "--loss", "10")
    try:
        _wait_up(shell)
        assert processes_of(shell.pid)  # the network is there while the shell runs
        if how == "ctrl-c":  # the terminal's Ctrl-C: the whole foreground group
            os.killpg(shell.pid, signal.SIGINT)
        else:
            shell.send_signal(signal.SIGTERM)
        shell.communicate(timeout=60)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode == 130
    _assert_nothing_left(shell.pid)


def test_fig3_mininet_cli_driven_on_stdin_runs_commands_and_leaves_nothing():
    shell = _start("fig3", "--strategy", "robe-sim", "--loss", "10", "--cli")
    script = "\n".join([
        "nodes",
        "client ip -br addr",  # a role stands for its node's name
        "client $ROBE_CONNECT",  # the client's shell has the session's variables
        "exit",
    ]) + "\n"  # fmt: skip
    out, err = shell.communicate(script, timeout=180)
    assert shell.returncode == 0, err[-2000:]
    assert f"rl-o{shell.pid}-" in out and "198.18.1.1" in out and "198.18.2.1" in out, out  # nodes, client's addresses
    answer = next(line for line in out.splitlines() if '"conn_id"' in line)
    record = ConnectionRecord.from_json(answer[answer.index("{") :])
    assert record.status == "ok" and record.strategy == "robe-sim" and record.winner is not None, answer
    assert "Mininet's CLI" in err and "torn down" in err
    _assert_nothing_left(shell.pid)
