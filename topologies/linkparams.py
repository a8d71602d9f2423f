"""Typed, validated parameters of an emulated link: per direction delay, jitter, loss, rate, queue.

The same parameters drive every backend (netem, userspace TAP wire), so results do not depend on
which backend a kernel allows. A link joins end ``a`` and end ``b``; ``a_to_b`` shapes what ``a``
sends, ``b_to_a`` what ``b`` sends. Delay is one-way: a link with ``delay_ms=10`` both ways adds
20 ms of round-trip time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any


class LinkConfigError(ValueError):
    """A link parameter is out of range; the message names the field and the bad value."""


def _check_number(name: str, value: object, *, low: float, high: float | None = None) -> None:
    """Raise LinkConfigError unless value is a finite number within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LinkConfigError(f"{name}={value!r}: must be a number")
    if not math.isfinite(value):
        raise LinkConfigError(f"{name}={value!r}: must be finite")
    if value < low or (high is not None and value > high):
        bounds = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
        raise LinkConfigError(f"{name}={value!r}: must be {bounds}")


@dataclass(frozen=True)
class DirectionParams:
    """How one direction of a link treats frames.

    Attributes:
        delay_ms: one-way propagation delay added to every frame.
        jitter_ms: uniform random extra delay in [0, jitter_ms]; frames keep their order.
        loss_pct: random loss, percent of frames, independent per frame.
        rate_mbit: serialisation rate in Mbit/s of frame bytes; None means unlimited.
        queue_packets: drop-tail limit of frames waiting for serialisation (used with a rate).
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_mbit: float | None = None
    queue_packets: int = 100

    def __post_init__(self) -> None:
        self.validate("")

    def validate(self, where: str) -> None:
        """Check every field; ``where`` prefixes field names in error messages."""
        _check_number(f"{where}delay_ms", self.delay_ms, low=0.0, high=10_000.0)
        _check_number(f"{where}jitter_ms", self.jitter_ms, low=0.0, high=10_000.0)
        _check_number(f"{where}loss_pct", self.loss_pct, low=0.0, high=100.0)
        if self.rate_mbit is not None:
            _check_number(f"{where}rate_mbit", self.rate_mbit, low=0.001, high=100_000.0)
        if isinstance(self.queue_packets, bool) or not isinstance(self.queue_packets, int):
            raise LinkConfigError(f"{where}queue_packets={self.queue_packets!r}: must be an integer")
        if not 1 <= self.queue_packets <= 1_000_000:
            raise LinkConfigError(f"{where}queue_packets={self.queue_packets!r}: must be 1..1000000")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (metadata, emulator control messages)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> DirectionParams:
        """Build from a dict, rejecting unknown keys with a message naming them."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LinkConfigError(f"{where}{unknown[0]}: unknown link parameter (known: {sorted(known)})")
        try:
            params = cls(**data)
        except LinkConfigError as err:
            raise LinkConfigError(f"{where}{err}") from None
        return params


@dataclass(frozen=True)
class LinkParams:
    """Both directions of a link."""

    a_to_b: DirectionParams = field(default_factory=DirectionParams)
    b_to_a: DirectionParams = field(default_factory=DirectionParams)

    @classmethod
    def symmetric(
        cls,
        *,
        delay_ms: float = 0.0,
        loss_pct: float = 0.0,
        rate_mbit: float | None = None,
        queue_packets: int = 100,
        jitter_ms: float = 0.0,
    ) -> LinkParams:
        """The same parameters in both directions."""
        one = DirectionParams(delay_ms, jitter_ms, loss_pct, rate_mbit, queue_packets)
        return cls(one, one)

    @classmethod
    def for_rtt(
        cls,
        *,
        rtt_ms: float,
        rate_mbit: float | None = None,
        loss_pct: float = 0.0,
        loss_direction: str = "both",
        queue_packets: int = 100,
    ) -> LinkParams:
        """A link adding ``rtt_ms`` of round trip (half each way) and loss on one or both directions.

        ``loss_direction`` is ``up`` (only a_to_b), ``down`` (only b_to_a) or ``both``.
        """
        _check_number("rtt_ms", rtt_ms, low=0.0, high=20_000.0)
        if loss_direction not in ("up", "down", "both"):
            raise LinkConfigError(f"loss_direction={loss_direction!r}: must be one of 'up', 'down', 'both'")
        base = DirectionParams(rtt_ms / 2, 0.0, 0.0, rate_mbit, queue_packets)
        lossy = replace(base, loss_pct=loss_pct)
        return cls(
            lossy if loss_direction in ("up", "both") else base,
            lossy if loss_direction in ("down", "both") else base,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {"a_to_b": self.a_to_b.to_dict(), "b_to_a": self.b_to_a.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> LinkParams:
        """Inverse of to_dict, with errors naming ``where.a_to_b.field``."""
        unknown = sorted(set(data) - {"a_to_b", "b_to_a"})
        if unknown:
            raise LinkConfigError(f"{where}{unknown[0]}: unknown key (expected a_to_b, b_to_a)")
        return cls(
            DirectionParams.from_dict(data.get("a_to_b", {}), f"{where}a_to_b."),
            DirectionParams.from_dict(data.get("b_to_a", {}), f"{where}b_to_a."),
        )
