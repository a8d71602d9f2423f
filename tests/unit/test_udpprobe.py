"""Tests of experiments.udpprobe: probe format, per-packet bookkeeping, and the CLI on loopback."""

import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.udpprobe import (
    HEADER,
    HEADER_SIZE,
    KIND_PROBE,
    KIND_REPLY,
    MAGIC,
    MAX_SIZE,
    VERSION,
    MalformedProbeError,
    Probe,
    ReflectorState,
    ReplyCollector,
    SendPlan,
    decode_probe,
    encode_probe,
    read_reflector_summary,
    read_send_result,
)

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

probes = st.builds(
    Probe,
    stream=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**32 - 1),
    send_ns=st.integers(0, 2**64 - 1),
    kind=st.sampled_from([KIND_PROBE, KIND_REPLY]),
    reflector_count=st.integers(0, 2**32 - 1),
)


@given(probes, st.integers(HEADER_SIZE, 1500))
def test_encode_decode_round_trip(probe, size):
    data = encode_probe(probe, size)
    assert len(data) == size
    assert decode_probe(data) == probe


def test_encode_rejects_out_of_range():
    with pytest.raises(ValueError, match="size"):
        encode_probe(Probe(1, 1, 1), HEADER_SIZE - 1)
    with pytest.raises(ValueError, match="size"):
        encode_probe(Probe(1, 1, 1), MAX_SIZE + 1)
    with pytest.raises(ValueError, match="seq"):
        encode_probe(Probe(1, 2**32, 1))
    with pytest.raises(ValueError, match="kind"):
        encode_probe(Probe(1, 1, 1, kind=7))


@given(st.binary(max_size=200))
def test_decode_random_bytes_raises_only_malformed(data):
    try:
        probe = decode_probe(data)
    except MalformedProbeError:
        return
    # Only a datagram that really has our header decodes.
    assert data[:4] == MAGIC and data[4] == VERSION
    assert probe.kind in (KIND_PROBE, KIND_REPLY)


@given(probes, st.integers(0, HEADER_SIZE - 1))
def test_decode_truncated_header_is_malformed(probe, cut):
    with pytest.raises(MalformedProbeError, match="shorter"):
        decode_probe(encode_probe(probe)[:cut])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ((b"XXXX", VERSION, KIND_PROBE), "magic"),
        ((MAGIC, VERSION + 1, KIND_PROBE), "version"),
        ((MAGIC, VERSION, 9), "kind"),
    ],
)
def test_decode_bad_header_is_malformed(fields, reason):
    data = HEADER.pack(*fields, 0, 1, 2, 3, 0) + bytes(10)
    with pytest.raises(MalformedProbeError, match=reason):
        decode_probe(data)


def test_reflector_state_counts_distinct_and_skips_junk():
    state = ReflectorState()
    first = state.handle(encode_probe(Probe(stream=5, seq=0, send_ns=111), 100))
    assert first is not None and len(first) == 100
    assert decode_probe(first) == Probe(5, 0, 111, kind=KIND_REPLY, reflector_count=1)
    second = state.handle(encode_probe(Probe(stream=5, seq=1, send_ns=222)))
    assert second is not None and decode_probe(second).reflector_count == 2
    again = state.handle(encode_probe(Probe(stream=5, seq=0, send_ns=111)))
    assert again is not None and decode_probe(again).reflector_count == 2  # duplicate: still echoed
    assert state.handle(encode_probe(Probe(stream=6, seq=0, send_ns=1))) is not None
    assert state.handle(b"garbage") is None
    assert state.handle(b"") is None
    assert state.handle(encode_probe(Probe(5, 9, 1, kind=KIND_REPLY))) is None  # never echo a reply
    assert state.received() == {"5": 2, "6": 1}
    assert (state.duplicates, state.malformed, state.foreign) == (1, 2, 1)


def test_reply_collector_classifies():
    peer = (LOOPBACK, 9000)
    collector = ReplyCollector(stream=3, count=10, peer=peer)
    reply = encode_probe(Probe(3, 4, 1_000_000, kind=KIND_REPLY, reflector_count=5))
    assert collector.accept(reply, peer, 3_500_000) == "reply"
    assert collector.accept(reply, peer, 4_000_000) == "duplicate"
    assert collector.accept(reply, (LOOPBACK, 9001), 4_000_000) == "foreign"  # wrong port
    assert collector.accept(encode_probe(Probe(4, 1, 0, kind=KIND_REPLY)), peer, 1) == "foreign"  # stream
    assert collector.accept(encode_probe(Probe(3, 10, 0, kind=KIND_REPLY)), peer, 1) == "foreign"  # seq range
    assert collector.accept(encode_probe(Probe(3, 1, 0)), peer, 1) == "foreign"  # a probe, not a reply
    assert collector.accept(encode_probe(Probe(3, 2, 50, kind=KIND_REPLY)), peer, 10) == "foreign"  # future
    assert collector.accept(b"\x00" * 3, peer, 1) == "malformed"
    assert collector.replies == 1
    assert collector.rtt_ms == [2.5]
    assert collector.reply_seqs == [4]
    assert collector.reflector_max_count == 5
    assert (collector.duplicates, collector.foreign, collector.malformed) == (1, 5, 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"count": -1}, {"interval_ms": -1.0}, {"wait_ms": -1.0}, {"size": 8}, {"port": 0}, {"stream": 2**32}],
)
def test_send_plan_rejects_bad_values(kwargs):
    base = {"dst": LOOPBACK, "port": 9000, "count": 1, "interval_ms": 1.0}
    with pytest.raises(ValueError):
        SendPlan(**{**base, **kwargs})


def _udpprobe(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.udpprobe", *args]


def _send(port: int, timeout: float = 60, **options: object) -> subprocess.CompletedProcess[str]:
    """Run the ``send`` command against loopback ``port``; options map to ``--option-name value``."""
    argv = ["send", "--dst", LOOPBACK, "--port", str(port)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    argv = _udpprobe(*argv)
    return subprocess.run(argv, check=False, capture_output=True, cwd=ROOT, text=True, timeout=timeout)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def reflector():
    """A running reflector on loopback; yields (process, port) and always reaps it."""
    port = _free_udp_port()
    proc = subprocess.Popen(
        _udpprobe("reflect", "--bind", LOOPBACK, "--port", str(port)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first == "READY", proc.stderr.read() if proc.stderr else ""
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _summary(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout
    summary: dict[str, Any] = json.loads(lines[0])
    return summary


def test_loopback_end_to_end(reflector):
    proc, port = reflector
    # Junk first: the reflector must skip and count it, and keep working.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        for payload in (b"x", b"RLPB", bytes(64)):
            junk.sendto(payload, (LOOPBACK, port))
    started = time.monotonic()
    sender = _send(port, src=LOOPBACK, count=200, interval_ms=1, stream=42, wait_ms=2000)
    elapsed = time.monotonic() - started
    assert sender.returncode == 0, sender.stderr
    result = read_send_result(sender.stdout)  # the typed reader the validation uses
    assert result.stream == 42
    assert result.sent == 200
    assert result.replies == 200
    assert sorted(result.reply_seqs) == list(range(200))
    assert len(result.rtt_ms) == 200
    assert all(0 < rtt < 50 for rtt in result.rtt_ms)
    assert sorted(result.rtt_ms)[100] < 5  # loopback median well under a millisecond normally
    assert result.reflector_max_count == 200
    assert result.duplicates == result.malformed == result.foreign == 0
    assert result.send_errors == {}
    assert sum(result.timestamps.values()) == 200
    # Paced, not bursted: 200 probes at 1 ms take about 0.2 s; and it stops early once all replied
    # instead of sitting out the 2 s wait.
    assert 0.19 <= elapsed < 1.9 + 1.5  # + interpreter start-up

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    _summary(out)  # exactly one summary line
    summary = read_reflector_summary(out)
    assert summary.received == {"42": 200}
    assert summary.malformed == 3
    assert summary.echoed == 200
    assert summary.port == port


def test_reflector_stops_on_stdin_eof(reflector):
    proc, port = reflector
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind((LOOPBACK, 0))
        client.settimeout(5)
        for seq in range(3):
            probe = Probe(stream=7, seq=seq, send_ns=time.monotonic_ns())
            client.sendto(encode_probe(probe), (LOOPBACK, port))
            reply = decode_probe(client.recv(2048))
            assert reply == replace(probe, kind=KIND_REPLY, reflector_count=seq + 1)
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    assert proc.returncode == 0
    assert proc.stdout is not None
    assert _summary(proc.stdout.read())["received"] == {"7": 3}


def test_sender_counts_unanswered_probes_and_waits():
    # Nothing listens on this port: every probe is lost, the sender waits --wait-ms and reports 0.
    port = _free_udp_port()
    started = time.monotonic()
    sender = _send(port, count=5, interval_ms=0, wait_ms=300, size=100, stream=3)
    assert sender.returncode == 0, sender.stderr
    result = json.loads(sender.stdout)
    assert (result["sent"], result["replies"], result["rtt_ms"], result["size"]) == (5, 0, [], 100)
    assert time.monotonic() - started >= 0.3


def test_cli_rejects_bad_arguments():
    bad = _send(9, count=1, interval_ms=1, size=4)
    assert bad.returncode == 2
    assert "size=4" in bad.stderr
