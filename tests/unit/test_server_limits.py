"""``robe serve`` under resource pressure: out of file descriptors, silent clients (loopback)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from robe.serverlog import AcceptFailed, Rejected, Request, read_record

ROOT = Path(__file__).resolve().parents[2]


def _request(port: int, conn: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(json.dumps({"conn": conn}).encode() + b"\n")
        return sock.recv(10)


def test_the_server_survives_running_out_of_descriptors_and_closes_silent_clients():
    argv = ["prlimit", "--nofile=48:48", sys.executable, "-m", "robe", "serve", "--bind", "127.0.0.1", "--port", "0",
            "--idle-timeout", "1"]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    idle: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline().split(" ", 1)[1])["port"]
        for _ in range(60):  # more than the server has descriptors for; they wait in its queue
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        time.sleep(2.5)  # past the idle timeout of every one of them (queued ones get accepted and time out)
        assert _request(port, "after") == b"OK\n"
        time.sleep(0.5)  # its record is written just after the reply
        assert server.poll() is None
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        out, err = server.communicate(timeout=10)
    records = [read_record(line) for line in out.splitlines() if line.startswith("{")]  # every line a typed record
    failed = [r for r in records if isinstance(r, AcceptFailed)]
    assert failed, err
    assert failed[0].reason == "Too many open files"
    timed_out = [r for r in records if isinstance(r, Rejected) and "no complete request within 1 s" in r.reason]
    assert len(timed_out) >= 40
    assert any(isinstance(r, Request) and r.conn == "after" for r in records)
