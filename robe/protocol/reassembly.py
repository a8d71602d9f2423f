"""Reassembly of the data stream by data sequence number (DSN), within a bounded receive window.

Subflows deliver DATA frames in any order, duplicated (reinjection after a subflow dies) or
overlapping. ``Reassembly.add`` stores what lies inside the window and returns the bytes that have
become contiguous; memory never exceeds the window, and data beyond it is refused (the sender
violated the advertised window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DSN_BITS = 64


class WindowViolationError(ValueError):
    """Data beyond the advertised receive window."""


@dataclass
class Reassembly:
    """In-order delivery from ``next_dsn`` on; at most ``window`` bytes buffered out of order.

    Attributes:
        next_dsn: the first sequence number not yet delivered (the cumulative data-ack).
        window: bytes accepted beyond ``next_dsn``.
    """

    next_dsn: int
    window: int
    _segments: dict[int, bytes] = field(default_factory=dict)
    _buffered: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.next_dsn < 1 << DSN_BITS:
            raise ValueError(f"next_dsn={self.next_dsn}: must be a 64-bit sequence number")
        if self.window < 1:
            raise ValueError(f"window={self.window}: must be positive")

    @property
    def buffered(self) -> int:
        """Out-of-order bytes held."""
        return self._buffered

    def add(self, dsn: int, data: bytes) -> bytes:
        """Take a segment; return the bytes now deliverable in order (possibly empty)."""
        end = dsn + len(data)
        if end > self.next_dsn + self.window:
            raise WindowViolationError(f"data up to {end} beyond the window ending at {self.next_dsn + self.window}")
        if end <= self.next_dsn or not data:
            return b""  # entirely old: a duplicate
        if dsn < self.next_dsn:
            data, dsn = data[self.next_dsn - dsn :], self.next_dsn
        self._store(dsn, data)
        return self._pop_contiguous()

    def _store(self, dsn: int, data: bytes) -> None:
        # Keep segments disjoint: trim the new one against every stored one it overlaps.
        pieces = [(dsn, data)]
        for start, stored in sorted(self._segments.items()):
            stop = start + len(stored)
            next_pieces = []
            for p_start, p_data in pieces:
                p_stop = p_start + len(p_data)
                if p_stop <= start or p_start >= stop:
                    next_pieces.append((p_start, p_data))
                    continue
                if p_start < start:
                    next_pieces.append((p_start, p_data[: start - p_start]))
                if p_stop > stop:
                    next_pieces.append((stop, p_data[stop - p_start :]))
            pieces = next_pieces
            if not pieces:
                return
        for p_start, p_data in pieces:
            self._segments[p_start] = p_data
            self._buffered += len(p_data)

    def _pop_contiguous(self) -> bytes:
        out = []
        while self.next_dsn in self._segments:
            chunk = self._segments.pop(self.next_dsn)
            self._buffered -= len(chunk)
            out.append(chunk)
            self.next_dsn += len(chunk)
        return b"".join(out)
