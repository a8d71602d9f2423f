"""Reassembly of the data stream by data sequence number (DSN), within a bounded receive window.

Subflows deliver DATA frames in any order, duplicated (reinjection after a subflow dies) or
overlapping. ``Reassembly.add`` stores what lies inside the window and returns the bytes that have
become contiguous; memory never exceeds the window, and data beyond it is refused (the sender
violated the advertised window).

Out-of-order segments are kept disjoint in a sorted map (``sortedcontainers.SortedDict``, start ->
bytes), so one ``add`` costs O(log n + k) for n stored segments of which it overlaps k, never a scan
of all of them. A segment that continues a stored one is appended to it (each byte is copied at
most once), so a subflow's in-order run stays one segment however small its frames. Tiny segments
with gaps between them would still cost far more memory than their bytes; ``max_segments`` bounds
how many are held, and exceeding it raises ``TooFragmentedError`` (the connection resets the subflow
that sent it, with a reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sortedcontainers import SortedDict

DSN_BITS = 64
#: Default bound on stored out-of-order segments per connection: one per 256 bytes of window.
SEGMENT_BUDGET_BYTES = 256


class WindowViolationError(ValueError):
    """Data beyond the advertised receive window."""


class TooFragmentedError(ValueError):
    """More disjoint out-of-order segments than the receiver keeps."""


@dataclass
class Reassembly:
    """In-order delivery from ``next_dsn`` on; at most ``window`` bytes buffered out of order.

    Attributes:
        next_dsn: the first sequence number not yet delivered (the cumulative data-ack).
        window: bytes accepted beyond ``next_dsn``.
        max_segments: at most this many disjoint out-of-order segments are held (None: the
            default, one per ``SEGMENT_BUDGET_BYTES`` of window; 0: no bound).
    """

    next_dsn: int
    window: int
    max_segments: int | None = None
    _segments: SortedDict[int, bytearray] = field(default_factory=SortedDict)
    _buffered: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.next_dsn < 1 << DSN_BITS:
            raise ValueError(f"next_dsn={self.next_dsn}: must be a 64-bit sequence number")
        if self.window < 1:
            raise ValueError(f"window={self.window}: must be positive")
        if self.max_segments is None:
            self.max_segments = max(16, self.window // SEGMENT_BUDGET_BYTES)
        if self.max_segments < 0:
            raise ValueError(f"max_segments={self.max_segments}: must be >= 0 (0: no bound)")

    @property
    def buffered(self) -> int:
        """Out-of-order bytes held."""
        return self._buffered

    @property
    def segments(self) -> int:
        """Disjoint out-of-order segments held."""
        return len(self._segments)

    @property
    def highest_end(self) -> int:
        """One past the highest sequence number received (delivered or held)."""
        if not self._segments:
            return self.next_dsn
        start, data = self._segments.peekitem(-1)
        return int(start) + len(data)

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
        """Keep what the stored segments do not cover yet, appended to the segment it continues."""
        segments = self._segments
        end = dsn + len(data)
        pos = dsn
        append_to: int | None = None  # the stored segment ending exactly at ``pos``, if any
        index = segments.bisect_right(dsn) - 1
        if index >= 0:
            start, stored = segments.peekitem(index)
            stored_end = start + len(stored)
            if stored_end >= end:
                return  # already held entirely
            if stored_end >= pos:
                pos, append_to = stored_end, start
        pieces: list[tuple[int | None, int, int]] = []  # (segment to append to or None, from, to)
        for start in list(segments.irange(minimum=pos, maximum=end, inclusive=(True, False))):
            if start > pos:
                pieces.append((append_to, pos, start))
            pos, append_to = start + len(segments[start]), start
            if pos >= end:
                break
        if pos < end:
            pieces.append((append_to, pos, end))
        new_segments = sum(1 for target, _, _ in pieces if target is None)
        if (
            self.max_segments
            and new_segments
            and len(segments) + new_segments > self.max_segments
            and pieces[0][1] != self.next_dsn  # data at the head is delivered at once, never held
        ):
            raise TooFragmentedError(
                f"{len(segments)} out-of-order segments held (at most {self.max_segments}): "
                f"the sender fragments its data into tiny pieces with gaps"
            )
        view = memoryview(data)
        for target, start, stop in pieces:
            chunk = view[start - dsn : stop - dsn]
            if target is None:
                segments[start] = bytearray(chunk)
            else:
                segments[target] += chunk
            self._buffered += stop - start

    def _pop_contiguous(self) -> bytes:
        out = []
        segments = self._segments
        while segments and segments.peekitem(0)[0] == self.next_dsn:
            _, chunk = segments.popitem(0)
            self._buffered -= len(chunk)
            out.append(chunk)
            self.next_dsn += len(chunk)
        return b"".join(out)
