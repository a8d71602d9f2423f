"""robe.kernel reads struct tcp_info at the right offsets: checked against ``ss -ti`` on real loopback
connections (TCP, and each subflow of kernel MPTCP), and the path RTT RobE_IPS learns is the minimum."""

import shutil
import socket
import subprocess
import threading
import time

import pytest

from robe import kernel


def _echo_server(proto: int) -> tuple[socket.socket, int]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def _exchange(sock: socket.socket, rounds: int = 50) -> None:
    for _ in range(rounds):
        sock.sendall(b"x" * 1000)
        got = 0
        while got < 1000:
            got += len(sock.recv(65536))


def _ss_field(local_port: int, name: str) -> float:
    out = subprocess.run(["ss", "-tinH", "src", f"127.0.0.1:{local_port}"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    for word in out.split():
        if word.startswith(f"{name}:"):
            return float(word.split(":")[1].split("/")[0])
    raise AssertionError(f"ss printed no {name}: {out!r}")


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_tcp_info_offsets_match_ss():
    server, port = _echo_server(socket.IPPROTO_TCP)
    with server, socket.create_connection(("127.0.0.1", port)) as client:
        _exchange(client)
        time.sleep(0.02)
        raw = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, kernel.TCP_INFO_SIZE)
        local = client.getsockname()[1]
        rtt_us = int.from_bytes(raw[kernel.TCPI_RTT_OFFSET : kernel.TCPI_RTT_OFFSET + 4], "little")
        min_us = int.from_bytes(raw[kernel.TCPI_MIN_RTT_OFFSET : kernel.TCPI_MIN_RTT_OFFSET + 4], "little")
        # ss prints milliseconds with three decimals: the same microseconds.
        assert min_us == round(_ss_field(local, "minrtt") * 1000)
        assert 0 < min_us <= rtt_us
        info = kernel.tcp_info(client)
        assert info is not None and info.rtt_us == round(_ss_field(local, "rtt") * 1000)


def test_mptcp_subflows_report_their_minimum_rtt():
    try:
        server, port = _echo_server(kernel.IPPROTO_MPTCP)
    except OSError as err:
        pytest.skip(f"no kernel MPTCP here: {err}")
    with server, socket.socket(socket.AF_INET, socket.SOCK_STREAM, kernel.IPPROTO_MPTCP) as client:
        client.connect(("127.0.0.1", port))
        _exchange(client)
        flows = kernel.subflows(client)
        assert flows, "kernel MPTCP reported no subflow"
        for flow in flows:
            assert 0 < flow.min_rtt_us <= flow.rtt_us
            assert flow.path_rtt_us == flow.min_rtt_us


def test_path_rtt_is_the_minimum_and_falls_back_to_the_smoothed_rtt():
    queued = kernel.Subflow("198.18.1.1:4000", "198.18.3.1:80", kernel.TCP_ESTABLISHED, 0, rtt_us=95_000,
                            min_rtt_us=20_300)  # fmt: skip
    assert queued.path_rtt_us == 20_300  # the queue a download built does not count
    old_kernel = kernel.Subflow("198.18.1.1:4000", "198.18.3.1:80", kernel.TCP_ESTABLISHED, 0, rtt_us=41_000)
    assert old_kernel.path_rtt_us == 41_000
