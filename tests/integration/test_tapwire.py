"""The userspace emulator process on scratch namespaces: devices, control protocol, exit behaviour."""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from topologies.linkparams import LinkParams
from topologies.links import PROJECT_ROOT, tapwire_command
from topologies.shell import run

pytestmark = pytest.mark.root


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    names = (f"rl-tw-{uuid.uuid4().hex[:6]}a", f"rl-tw-{uuid.uuid4().hex[:6]}b")
    for name in names:
        run(["ip", "netns", "add", name])
    try:
        yield names
    finally:
        for name in names:
            run(["ip", "netns", "del", name], check=False)


def _start(a: str, b: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    argv = tapwire_command(
        tag="rl-tw-test", a_netns=f"/run/netns/{a}", a_name="tw0", b_netns=f"/run/netns/{b}", b_name="tw1", seed=3
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(extra_env or {})}
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _ask(proc: subprocess.Popen[bytes], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()
    return proc.stdout.readline().decode().strip()


def _device_exists(netns: str, name: str) -> bool:
    return run(["ip", "-n", netns, "link", "show", "dev", name], check=False).returncode == 0


def test_devices_live_exactly_as_long_as_the_process(two_namespaces):
    a, b = two_namespaces
    proc = _start(a, b)
    ready = _ask(proc, json.dumps(LinkParams.symmetric(delay_ms=5).to_dict()))
    assert ready.startswith("READY ")
    assert json.loads(ready.split(" ", 1)[1])["pid"] == proc.pid
    assert _device_exists(a, "tw0") and _device_exists(b, "tw1")
    mtu = json.loads(run(["ip", "-n", a, "-j", "link", "show", "dev", "tw0"]).stdout)[0]["mtu"]
    assert mtu == 1500

    assert _ask(proc, json.dumps(LinkParams.symmetric(delay_ms=7, loss_pct=3).to_dict())) == "OK"
    stats = json.loads(_ask(proc, '{"cmd": "stats"}').split(" ", 1)[1])
    assert stats["params"]["a_to_b"]["loss_pct"] == 3
    assert set(stats["a_to_b"]) >= {"offered", "lost", "queue_dropped", "delivered"}

    bad = _ask(proc, '{"a_to_b": {"loss_pct": 120}}')
    assert bad.startswith("ERROR ") and "loss_pct=120" in bad
    assert _ask(proc, "not json").startswith("ERROR ")
    assert proc.poll() is None, "a bad control line must not kill the link"

    assert proc.stdin is not None
    proc.stdin.close()  # the controller goes away
    assert proc.wait(timeout=5) == 0
    assert not _device_exists(a, "tw0") and not _device_exists(b, "tw1")


def test_unknown_namespace_fails_with_a_clear_message(two_namespaces):
    a, _ = two_namespaces
    proc = _start(a, "rl-tw-does-not-exist")
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(json.dumps(LinkParams().to_dict()).encode() + b"\n")
    proc.stdin.flush()
    assert proc.wait(timeout=5) == 2
    assert "rl-tw-does-not-exist" in proc.stderr.read().decode()
    assert not _device_exists(a, "tw0")


def test_emulator_runs_from_any_working_directory():
    out = subprocess.run(
        [sys.executable, "-m", "topologies.tapwire", "--help"],
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--a-netns" in out.stdout
