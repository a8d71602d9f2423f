"""Thin wrappers over the kernel socket API that the endpoints need: MPTCP sockets, resets, and
the TCP/MPTCP introspection options (TCP_INFO, TCP_IS_MPTCP, MPTCP_TCPINFO, MPTCP_SUBFLOW_ADDRS).

The MPTCP per-subflow options take an input header in the option buffer, which Python's
``socket.getsockopt`` cannot pass, so they go through libc's ``getsockopt`` with ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
from dataclasses import dataclass

from robe.strategies import Protocol

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_TCPINFO = 2
MPTCP_SUBFLOW_ADDRS = 3
TCP_IS_MPTCP = 43
#: struct tcp_info (include/uapi/linux/tcp.h): tcpi_rtt and tcpi_min_rtt, in microseconds. Checked on
#: this machine's 6.18 kernel against ``ss -ti`` (rtt: and minrtt: of the same socket).
TCPI_RTT_OFFSET = 68
TCPI_MIN_RTT_OFFSET = 148
TCP_INFO_SIZE = 232  # up to and including tcpi_total_rto_time on 6.x; shorter kernels fill less
TCP_ESTABLISHED = 1
SUBFLOW_HEADER = struct.Struct("IIII")  # size_subflow_data, num_subflows, size_kernel, size_user
SOCKADDR_SIZE = 28  # the kernel's union of sockaddr_in / sockaddr_in6
MAX_SUBFLOWS = 16

_libc = ctypes.CDLL(None, use_errno=True)


class MptcpUnavailableError(RuntimeError):
    """The kernel refuses MPTCP sockets; the message says why and what to do."""


def open_socket(protocol: Protocol) -> socket.socket:
    """A non-blocking stream socket of ``protocol``; a clear error when MPTCP is off or missing."""
    proto = IPPROTO_MPTCP if protocol is Protocol.MPTCP else socket.IPPROTO_TCP
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    except OSError as err:
        if protocol is Protocol.MPTCP and err.errno in (errno.EPROTONOSUPPORT, errno.ENOPROTOOPT, errno.EINVAL):
            raise MptcpUnavailableError(
                f"MPTCP socket refused ({err.strerror}): needs Linux >= 5.6 with CONFIG_MPTCP and "
                "sysctl net.mptcp.enabled=1 in this network namespace"
            ) from None
        raise
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def abort(sock: socket.socket) -> None:
    """Close with an immediate RST (SO_LINGER 0) instead of an orderly FIN."""
    with contextlib.suppress(OSError):  # already dead: closing is all that is left
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass(frozen=True)
class TcpInfo:
    """The TCP_INFO fields the log uses."""

    state: int
    retransmits: int  # unrecovered RTO timeouts of the current segment (SYN retransmissions)
    total_retrans: int
    rtt_us: int
    min_rtt_us: int = 0  # tcpi_min_rtt (0: the kernel's tcp_info is too short to hold it)


def tcp_info(sock: socket.socket) -> TcpInfo | None:
    """TCP_INFO of a TCP socket (or an MPTCP socket's first subflow); None if unavailable."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    except OSError:
        return None
    if len(raw) < 104:
        return None
    min_rtt = struct.unpack_from("I", raw, TCPI_MIN_RTT_OFFSET)[0] if len(raw) >= TCPI_MIN_RTT_OFFSET + 4 else 0
    return TcpInfo(
        raw[0], raw[2], struct.unpack_from("I", raw, 100)[0], struct.unpack_from("I", raw, TCPI_RTT_OFFSET)[0], min_rtt
    )


def is_mptcp(sock: socket.socket) -> bool | None:
    """True if the connection runs MPTCP, False if it fell back to plain TCP, None if unknown."""
    try:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, TCP_IS_MPTCP))
    except OSError:
        pass
    try:  # kernels before 6.10: the protocol of the socket is all we know
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == IPPROTO_MPTCP
    except OSError:
        return None


def _subflow_option(sock: socket.socket, option: int, item_size: int) -> list[bytes]:
    """Items of an MPTCP per-subflow option (header in, header + items out)."""
    size = SUBFLOW_HEADER.size + MAX_SUBFLOWS * item_size
    buf = ctypes.create_string_buffer(SUBFLOW_HEADER.pack(SUBFLOW_HEADER.size, 0, 0, item_size), size)
    length = ctypes.c_uint32(size)
    if _libc.getsockopt(sock.fileno(), SOL_MPTCP, option, buf, ctypes.byref(length)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    _, count, _, user_size = SUBFLOW_HEADER.unpack_from(buf.raw)
    count = min(count, MAX_SUBFLOWS)
    start = SUBFLOW_HEADER.size
    return [buf.raw[start + i * user_size : start + (i + 1) * user_size] for i in range(count)]


def _sockaddr(raw: bytes) -> str:
    family, port = struct.unpack_from("=HH", raw)
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{socket.ntohs(port)}"
    if family == socket.AF_INET6:
        return f"[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{socket.ntohs(port)}"
    return "?"


@dataclass(frozen=True)
class Subflow:
    """One subflow of an MPTCP connection as the kernel reports it."""

    local: str
    remote: str
    state: int
    total_retrans: int
    rtt_us: int = 0  # tcpi_rtt: the subflow's smoothed RTT
    min_rtt_us: int = 0  # tcpi_min_rtt: the lowest RTT sample, the handshake's included (0: not reported)

    @property
    def established(self) -> bool:
        """In TCP state ESTABLISHED."""
        return self.state == TCP_ESTABLISHED

    @property
    def path_rtt_us(self) -> int:
        """The RTT of the subflow's path for RobE_IPS's history: the minimum RTT (``tcpi_min_rtt``, the
        handshake's included); the smoothed RTT only where the kernel does not report the minimum.

        Not ``tcpi_rtt``: read when a connection ends, the smoothed RTT of the subflow that carried the
        download holds the queue it built on a slow link (experiment 2's DSL at 10 Mbit/s: far above
        its 20 ms), so the faster path looked slower than one that only did a handshake.
        """
        return self.min_rtt_us or self.rtt_us


def subflows(sock: socket.socket) -> list[Subflow]:
    """Every subflow of an MPTCP socket (empty for plain TCP or a fallen-back connection)."""
    try:
        infos = _subflow_option(sock, MPTCP_TCPINFO, TCP_INFO_SIZE)
        addrs = _subflow_option(sock, MPTCP_SUBFLOW_ADDRS, 2 * SOCKADDR_SIZE)
    except OSError:
        return []
    result = []
    for info, addr in zip(infos, addrs, strict=False):
        total = struct.unpack_from("I", info, 100)[0] if len(info) >= 104 else 0
        rtt = struct.unpack_from("I", info, TCPI_RTT_OFFSET)[0] if len(info) >= TCPI_RTT_OFFSET + 4 else 0
        min_rtt = struct.unpack_from("I", info, TCPI_MIN_RTT_OFFSET)[0] if len(info) >= TCPI_MIN_RTT_OFFSET + 4 else 0
        local, remote = _sockaddr(addr[:SOCKADDR_SIZE]), _sockaddr(addr[SOCKADDR_SIZE:])
        result.append(Subflow(local, remote, info[0], total, rtt, min_rtt))
    return result
