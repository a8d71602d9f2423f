"""Wire format of the userspace RobE transport: MPTCP signalling carried in frames over TCP subflows.

Every frame is a 4-byte header (type u8, flags u8, payload length u16, big-endian) followed by the
payload. Control frames have a fixed payload size; DATA carries at most ``MAX_DATA`` bytes. The
decoder checks the length against the type's bound *before* buffering the payload, so a peer can
never make us allocate more than one bounded frame, and reports every violation as a
``FrameError`` carrying the ``ResetReason`` to send in the RST that answers it.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, NoReturn

HEADER = struct.Struct("!BBH")
MAX_DATA = 16_384
MAX_BUFFERED = HEADER.size + MAX_DATA


class FrameType(enum.IntEnum):
    """Frame types (the MPTCP option each stands for in brackets)."""

    CAP = 1  # initial subflow: Key-A (MP_CAPABLE SYN, RFC 6824 style)
    CAP_ACK = 2  # Key-B, acting as the first data-ack (MP_CAPABLE SYN/ACK + DSS)
    JOIN = 3  # Token-B, nonce R-A, address id (MP_JOIN SYN)
    JOIN_ACK = 4  # truncated HMAC-B, nonce R-B (MP_JOIN SYN/ACK)
    JOIN_FIN = 5  # HMAC-A (MP_JOIN third ACK)
    JOIN_CAP = 6  # eSIM: Key-A and an HMAC over Key-A, Key-B, Key-B' (MP_JOIN_CAP)
    DATA = 7  # data sequence number + payload (DSS mapping)
    DATA_ACK = 8  # cumulative data-ack + receive window (DSS data-ack)
    DATA_FIN = 9  # end of the data stream at this sequence number (DATA_FIN)
    RST = 10  # reset with a reason (MP_TCPRST)
    CAP_ATTACH = 11  # downgrade: a later potentially initial subflow proves Key-B (third ACK with both keys)


class ResetReason(enum.IntEnum):
    """Why a subflow or connection is reset (carried in RST frames and logged)."""

    UNSPECIFIED = 0
    MALFORMED = 1
    UNKNOWN_TOKEN = 2
    BAD_HMAC = 3
    OVERSIZED = 4
    OUT_OF_STATE = 5
    TOO_MANY_SUBFLOWS = 6
    NOT_READING = 7
    LOSER = 8  # a potentially initial subflow that lost the race (break before make)
    NO_ROBE = 9  # the peer does not speak RobE: fall back to single path
    FRAGMENTED = 10  # more out-of-order segments than the receiver keeps (MP_TCPRST "too much outstanding data")
    TIMEOUT = 11  # the subflow did not complete its handshake (CAP, JOIN) in time
    CLOSED = 12  # the connection is closed (by its application, or both streams ended): nothing joins it


class FrameError(ValueError):
    """The byte stream broke the wire format; ``reason`` goes into the answering RST."""

    def __init__(self, reason: ResetReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    """Base of all frames; subclasses define ``TYPE`` and a fixed payload layout."""

    TYPE: ClassVar[FrameType]
    LAYOUT: ClassVar[struct.Struct]

    def payload(self) -> bytes:
        """Payload bytes (without the header)."""
        return self.LAYOUT.pack(*self.__dict__.values())

    def encode(self) -> bytes:
        """Header + payload."""
        body = self.payload()
        return HEADER.pack(self.TYPE, 0, len(body)) + body


@dataclass(frozen=True)
class Cap(Frame):
    """Potentially initial subflow: the client's key, the protocol version and its address id."""

    TYPE = FrameType.CAP
    LAYOUT = struct.Struct("!BBQ")
    version: int
    addr_id: int
    key_a: int


@dataclass(frozen=True)
class CapAck(Frame):
    """The server's key; its data-ack acknowledges the client's first data."""

    TYPE = FrameType.CAP_ACK
    LAYOUT = struct.Struct("!QQ")
    key_b: int
    data_ack: int


@dataclass(frozen=True)
class Join(Frame):
    """Join request naming the connection by the server's token."""

    TYPE = FrameType.JOIN
    LAYOUT = struct.Struct("!IIB")
    token_b: int
    nonce_a: int
    addr_id: int


@dataclass(frozen=True)
class JoinAck(Frame):
    """The server's truncated (64-bit) HMAC and nonce."""

    TYPE = FrameType.JOIN_ACK
    LAYOUT = struct.Struct("!8sI")
    hmac_b: bytes
    nonce_b: int


@dataclass(frozen=True)
class JoinFin(Frame):
    """The client's 160-bit HMAC completing a join."""

    TYPE = FrameType.JOIN_FIN
    LAYOUT = struct.Struct("!20s")
    hmac_a: bytes


@dataclass(frozen=True)
class JoinCap(Frame):
    """eSIM: a loser recycled into a subsequent subflow of the connection keyed by ``key_a``."""

    TYPE = FrameType.JOIN_CAP
    LAYOUT = struct.Struct("!BQ16s")
    addr_id: int
    key_a: int
    hmac: bytes


@dataclass(frozen=True)
class CapAttach(Frame):
    """Downgrade (Proposal 1): a later potentially initial subflow of the connection keyed ``key_a``,
    attached as a subsequent subflow; ``hmac`` proves the sender knows Key-B."""

    TYPE = FrameType.CAP_ATTACH
    LAYOUT = struct.Struct("!BQ16s")
    addr_id: int
    key_a: int
    hmac: bytes


@dataclass(frozen=True)
class DataAck(Frame):
    """Cumulative data-ack and the receiver's window in bytes."""

    TYPE = FrameType.DATA_ACK
    LAYOUT = struct.Struct("!QI")
    data_ack: int
    window: int


@dataclass(frozen=True)
class DataFin(Frame):
    """The sender's stream ends before ``dsn``."""

    TYPE = FrameType.DATA_FIN
    LAYOUT = struct.Struct("!Q")
    dsn: int


@dataclass(frozen=True)
class Rst(Frame):
    """Reset with a reason."""

    TYPE = FrameType.RST
    LAYOUT = struct.Struct("!B")
    reason: int


@dataclass(frozen=True)
class Data(Frame):
    """Payload mapped at data sequence number ``dsn`` (variable length, at most MAX_DATA)."""

    TYPE = FrameType.DATA
    LAYOUT = struct.Struct("!Q")
    dsn: int
    data: bytes

    def payload(self) -> bytes:
        """Sequence number then the bytes."""
        if len(self.data) > MAX_DATA:
            raise ValueError(f"DATA of {len(self.data)} bytes: at most {MAX_DATA}")
        return self.LAYOUT.pack(self.dsn) + self.data


FIXED: dict[FrameType, type[Frame]] = {
    cls.TYPE: cls for cls in (Cap, CapAck, Join, JoinAck, JoinFin, JoinCap, CapAttach, DataAck, DataFin, Rst)
}


_FRAME_TYPES = frozenset(t.value for t in FrameType)


def _decode_payload(kind: FrameType, body: bytes) -> Frame:
    if kind is FrameType.DATA:
        (dsn,) = Data.LAYOUT.unpack_from(body)
        return Data(dsn, bytes(body[Data.LAYOUT.size :]))
    cls = FIXED[kind]
    values = cls.LAYOUT.unpack(body)
    frame = cls(*values)
    if isinstance(frame, Rst) and frame.reason not in ResetReason.__members__.values():
        raise FrameError(ResetReason.MALFORMED, f"RST with unknown reason {frame.reason}")
    return frame


class Decoder:
    """Incremental decoder: ``feed(bytes)`` then iterate ``frames()``; bounded memory."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.failed: FrameError | None = None

    def feed(self, data: bytes) -> None:
        """Append received bytes (after an error, input is ignored)."""
        if self.failed is None:
            self._buffer += data

    def has_frame(self) -> bool:
        """Whether ``frames`` would yield a frame now, or raise (a header it rejects)."""
        if self.failed is not None or len(self._buffer) < HEADER.size:
            return False
        kind_raw, flags, length = HEADER.unpack_from(self._buffer)
        if flags or kind_raw not in _FRAME_TYPES:
            return True
        kind = FrameType(kind_raw)
        if kind is FrameType.DATA:
            allowed = Data.LAYOUT.size <= length <= Data.LAYOUT.size + MAX_DATA
        else:
            allowed = length == FIXED[kind].LAYOUT.size
        return not allowed or len(self._buffer) >= HEADER.size + int(length)

    def frames(self) -> Iterator[Frame]:
        """Complete frames so far; raises FrameError once, on the first violation."""
        if self.failed is not None:
            return
        while len(self._buffer) >= HEADER.size:
            kind_raw, flags, length = HEADER.unpack_from(self._buffer)
            try:
                kind = FrameType(kind_raw)
            except ValueError:
                self._fail(ResetReason.MALFORMED, f"unknown frame type {kind_raw}")
            if flags:
                self._fail(ResetReason.MALFORMED, f"{kind.name}: reserved flags {flags:#x} set")
            if kind is FrameType.DATA:
                low, high = Data.LAYOUT.size, Data.LAYOUT.size + MAX_DATA
                if not low <= length <= high:
                    reason = ResetReason.OVERSIZED if length > high else ResetReason.MALFORMED
                    self._fail(reason, f"DATA payload of {length} bytes (allowed {low}..{high})")
            elif length != FIXED[kind].LAYOUT.size:
                self._fail(ResetReason.MALFORMED,
                           f"{kind.name} payload of {length} bytes (expected {FIXED[kind].LAYOUT.size})")  # fmt: skip
            end = HEADER.size + length
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            try:
                yield _decode_payload(kind, body)
            except FrameError as err:
                self.failed = err
                self._buffer.clear()
                raise

    def _fail(self, reason: ResetReason, message: str) -> NoReturn:
        self.failed = FrameError(reason, message)
        self._buffer.clear()
        raise self.failed

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame (never more than MAX_BUFFERED - 1 + a read)."""
        return len(self._buffer)
