"""Sending side of the userspace RobE transport: the data stream buffer, what each subflow carries,
reinjection when a subflow dies, and the two schedulers: lowest RTT first, and the kernel's default.

Pure bookkeeping: the connection state machine asks ``next_chunk`` what to put into a DATA frame on
which subflow, reports cumulative data-acks, and reports dead subflows, whose unacknowledged
mappings are queued for reinjection on the others.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field


class SendBufferFullError(ValueError):
    """More unacknowledged data than the buffer limit."""


@dataclass(frozen=True)
class SubflowView:
    """What the scheduler knows about a subflow."""

    sid: int
    ready: bool  # handshake (and, for joins, the fourth ACK) complete: may carry data
    writable: bool  # its socket accepts more bytes now
    srtt_us: int
    queued: int = 0  # bytes sent on it and not yet acknowledged


def lowest_rtt_first(subflows: list[SubflowView]) -> int | None:
    """The ready, writable subflow with the lowest smoothed RTT (ties: lowest id), or None."""
    usable = [s for s in subflows if s.ready and s.writable]
    if not usable:
        return None
    return min(usable, key=lambda s: (s.srtt_us, s.sid)).sid


def kernel_default(subflows: list[SubflowView]) -> int | None:
    """Linux's default MPTCP scheduler (``mptcp_subflow_get_send``, net/mptcp/protocol.c), for
    subflows given in the kernel's list order (the initial subflow first, then in joining order).

    The kernel picks the subflow with the shortest *linger time*, its queued bytes divided by its
    pacing rate, and keeps the first on a tie (strict ``<``). Idle subflows all linger 0, so a
    request or a short answer always goes on the first subflow, whatever the RTTs: the initial one.
    Here the linger time is ``queued x srtt`` (the pacing rate taken as proportional to 1/RTT).
    """
    best: SubflowView | None = None
    for view in subflows:
        if view.ready and view.writable and (best is None or view.queued * view.srtt_us < best.queued * best.srtt_us):
            best = view
    return None if best is None else best.sid


#: The schedulers by name (``Endpoint.scheduler``).
SCHEDULERS: dict[str, Callable[[list[SubflowView]], int | None]] = {
    "lowest-rtt": lowest_rtt_first,
    "kernel-default": kernel_default,
}


@dataclass
class SendBuffer:
    """The outgoing byte stream from ``acked_dsn`` on.

    Attributes:
        acked_dsn: everything before it is acknowledged (data-ack) and forgotten.
        limit: at most this many unacknowledged bytes are held (backpressure on ``write``).
    """

    acked_dsn: int
    limit: int
    _data: bytearray = field(default_factory=bytearray)
    _next_new: int = field(init=False)
    _in_flight: dict[int, dict[int, int]] = field(default_factory=dict)  # sid -> {dsn: length}
    _reinject: collections.deque[tuple[int, int]] = field(default_factory=collections.deque)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit={self.limit}: must be positive")
        self._next_new = self.acked_dsn

    @property
    def end_dsn(self) -> int:
        """Sequence number after the last byte written."""
        return self.acked_dsn + len(self._data)

    @property
    def space(self) -> int:
        """Bytes ``write`` would accept now."""
        return self.limit - len(self._data)

    def write(self, data: bytes) -> int:
        """Append as much of ``data`` as fits; return how much was taken."""
        taken = data[: self.space]
        self._data += taken
        return len(taken)

    def in_flight(self, sid: int) -> int:
        """Bytes sent on subflow ``sid`` and not yet acknowledged."""
        return sum(self._in_flight.get(sid, {}).values())

    def has_pending(self) -> bool:
        """Anything to send (reinjections first, then new data)?"""
        self._drop_acked_reinjections()
        return bool(self._reinject) or self._next_new < self.end_dsn

    def next_chunk(self, sid: int, max_len: int) -> tuple[int, bytes] | None:
        """The next (dsn, bytes) to send on subflow ``sid``: a reinjection first, else new data."""
        self._drop_acked_reinjections()
        if self._reinject:
            dsn, queued = self._reinject.popleft()
            length = min(queued, max_len)
            if length < queued:
                self._reinject.appendleft((dsn + length, queued - length))
        elif self._next_new < self.end_dsn:
            dsn, length = self._next_new, min(max_len, self.end_dsn - self._next_new)
            self._next_new += length
        else:
            return None
        self._in_flight.setdefault(sid, {})[dsn] = length
        start = dsn - self.acked_dsn
        return dsn, bytes(self._data[start : start + length])

    def _drop_acked_reinjections(self) -> None:
        while self._reinject:
            dsn, length = self._reinject[0]
            if dsn + length <= self.acked_dsn:
                self._reinject.popleft()
            elif dsn < self.acked_dsn:
                self._reinject[0] = (self.acked_dsn, dsn + length - self.acked_dsn)
            else:
                return

    def ack(self, data_ack: int) -> int:
        """A cumulative data-ack arrived; return how many new bytes it acknowledged."""
        if data_ack <= self.acked_dsn:
            return 0
        if data_ack > self._next_new:
            raise ValueError(f"data_ack={data_ack} acknowledges data never sent (sent up to {self._next_new})")
        done = data_ack - self.acked_dsn
        del self._data[:done]
        self.acked_dsn = data_ack
        self._next_new = max(self._next_new, data_ack)
        for flights in self._in_flight.values():
            for dsn in [d for d, n in flights.items() if d + n <= data_ack]:
                del flights[dsn]
        return done

    def subflow_died(self, sid: int) -> int:
        """Queue the dead subflow's unacknowledged mappings for the others; return the byte count."""
        flights = self._in_flight.pop(sid, {})
        pending = sorted((max(d, self.acked_dsn), d + n) for d, n in flights.items() if d + n > self.acked_dsn)
        for start, stop in pending:
            self._reinject.append((start, stop - start))
        return sum(stop - start for start, stop in pending)
