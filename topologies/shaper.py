"""Sans-IO model of one direction of an emulated link: loss, drop-tail queue, rate, delay, jitter.

``DirectionShaper.offer(size, now)`` decides the fate of one frame offered at time ``now`` (seconds,
any monotonic clock) and returns the time it must leave the far end, or None when it is dropped.
The emulator process (``topologies.tapwire``) only moves bytes and keeps time; every decision is
made here, so the model is tested without devices or clocks.

Order of effects, as in netem with a rate: random loss first, then the drop-tail queue of frames
still waiting to be serialised, then serialisation at ``rate_mbit``, then propagation ``delay_ms``
plus uniform jitter. Frames never overtake each other (due times are non-decreasing), as on a
wire.
"""

from __future__ import annotations

import collections
import random
from dataclasses import asdict, dataclass

from topologies.linkparams import DirectionParams


@dataclass
class DirectionStats:
    """Counters of one direction since the emulator started."""

    offered: int = 0
    lost: int = 0
    queue_dropped: int = 0
    accepted: int = 0
    accepted_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        """Plain dict for JSON."""
        return asdict(self)


class DirectionShaper:
    """Decides loss and departure time of each frame of one link direction."""

    def __init__(self, params: DirectionParams, rng: random.Random) -> None:
        self.params = params
        self.rng = rng
        self.stats = DirectionStats()
        # Serialisation end times of accepted frames not yet fully serialised: the queue.
        self._serialising: collections.deque[float] = collections.deque()
        self._busy_until = 0.0
        self._last_due = 0.0

    def set_params(self, params: DirectionParams) -> None:
        """Apply new parameters to frames offered from now on; queued frames keep their due times."""
        self.params = params

    def queue_length(self, now: float) -> int:
        """Frames accepted but not yet serialised at ``now``."""
        while self._serialising and self._serialising[0] <= now:
            self._serialising.popleft()
        return len(self._serialising)

    def offer(self, size: int, now: float) -> float | None:
        """A frame of ``size`` bytes arrives at ``now``: its due time at the far end, or None if dropped."""
        params = self.params
        self.stats.offered += 1
        if params.loss_pct > 0 and self.rng.random() * 100.0 < params.loss_pct:
            self.stats.lost += 1
            return None
        if params.rate_mbit is None:
            sent = now
        else:
            if self.queue_length(now) >= params.queue_packets:
                self.stats.queue_dropped += 1
                return None
            start = max(now, self._busy_until)
            sent = start + size * 8 / (params.rate_mbit * 1e6)
            self._busy_until = sent
            self._serialising.append(sent)
        due = sent + params.delay_ms / 1000.0
        if params.jitter_ms > 0:
            due += self.rng.uniform(0.0, params.jitter_ms / 1000.0)
        due = max(due, self._last_due)
        self._last_due = due
        self.stats.accepted += 1
        self.stats.accepted_bytes += size
        return due
