"""Bounded start-up waits and one-line errors, on real processes."""

import subprocess
import sys
import time

import pytest

from topologies.shell import CommandError
from topologies.startup import StartupError, last_line, one_line, wait_ready


def _python(code: str, stderr=subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_ready_line_is_returned_and_later_output_is_left_for_the_next_reader():
    proc = _python("print('READY 1', flush=True); print('next', flush=True)")
    assert wait_ready(proc, "helper", "READY", timeout_s=30) == "READY 1\n"
    assert proc.stdout is not None and proc.stdout.readline() == "next\n"
    proc.wait(timeout=10)


def test_process_that_exits_names_its_status_and_last_stderr_line():
    proc = _python("import socket\nraise OSError(98, 'Address already in use')")
    with pytest.raises(StartupError) as caught:
        wait_ready(proc, "probe reflector in rl-x-server", "READY", timeout_s=30)
    assert str(caught.value) == (
        "probe reflector in rl-x-server did not start: exited 1: OSError: [Errno 98] Address already in use"
    )


def test_silent_process_fails_at_the_bound_and_is_stopped():
    proc = _python("import time; time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(StartupError, match=r"^server did not start: no 'READY' within 1 s$"):
        wait_ready(proc, "server", "READY", timeout_s=1.0)
    assert 1.0 <= time.monotonic() - started < 5
    assert proc.poll() is not None


def test_unexpected_first_line_is_quoted(tmp_path):
    log = tmp_path / "err"
    with log.open("w") as stderr:
        proc = _python("import sys; print('usage: nope'); sys.stderr.write('bad option\\n'); sys.exit(2)", stderr)
    with pytest.raises(StartupError) as caught:
        wait_ready(proc, "dnsmasq", "READY", timeout_s=30, stderr_file=log)
    assert str(caught.value) == "dnsmasq did not start: printed 'usage: nope' instead of 'READY' (exit 2): bad option"


def test_one_line_keeps_what_and_why():
    err = CommandError(["ip", "link", "add", "x"], 2, "", "RTNETLINK answers: File exists\n")
    assert one_line(err) == "command failed (exit 2): ip link add x: RTNETLINK answers: File exists"
    traceback = "emulator exited:\nTraceback (most recent call last):\n  File x\nTapWireError: no /dev/net/tun\n"
    assert one_line(traceback) == "emulator exited: TapWireError: no /dev/net/tun"
    assert one_line("a  b\tc") == "a b c"
    assert len(one_line("x" * 1000)) == 400
    assert last_line("one\n\n two \n\n") == "two"
    assert one_line("") == ""
