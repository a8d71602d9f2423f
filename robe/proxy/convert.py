"""The Convert header: the original destination, sent with the first data (no extra round trip).

In the spirit of RFC 8803's 0-RTT TCP Convert protocol: the client proxy puts this header in front
of the first bytes of the client's stream; the HAAP decodes it, connects to the destination and
relays what follows. Layout (network byte order, lengths in 32-bit words as in RFC 8803)::

     0               1               2               3
    +---------------+---------------+---------------+---------------+
    |  magic 'R'    |  magic 'L'    |  version = 1  | total length  |  fixed header; total length
    +---------------+---------------+---------------+---------------+  counts every word, fixed
    |  type = 10    | length = 5    |       destination port        |  header included (6 for one
    +---------------+---------------+---------------+---------------+  Connect TLV)
    |                                                               |
    |       destination address: IPv6, or IPv4 as ::ffff:a.b.c.d     |  Connect TLV (RFC 8803 type 10,
    |                                                               |  without TCP options)
    +---------------+---------------+---------------+---------------+

Further TLVs may follow the Connect TLV: types 192..255 (RFC 8803's private use) are skipped,
any other unknown type is an error. Exactly one Connect TLV is required. The whole header is at
most ``MAX_HEADER_WORDS`` words, so a decoder never buffers more than ``MAX_HEADER_LEN`` bytes.

Sans-IO: ``encode`` returns bytes; ``Decoder.feed`` takes bytes as they arrive and returns the
``Destination`` once the header is complete, after which ``Decoder.payload`` holds the bytes that
followed the header in the last chunk. Anything malformed raises ``ConvertError`` with a reason,
as early as the first offending byte allows.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

MAGIC = b"RL"
VERSION = 1
WORD = 4
FIXED_LEN = 4
TLV_CONNECT = 10
CONNECT_WORDS = 5  # type, length, port (1 word) + 128-bit address (4 words)
PRIVATE_TLV_MIN = 192  # RFC 8803: 192..255 are private use; skipped here
MAX_HEADER_WORDS = 32
MAX_HEADER_LEN = MAX_HEADER_WORDS * WORD
MIN_HEADER_WORDS = 1 + CONNECT_WORDS

_CONNECT = struct.Struct("!BBH16s")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ConvertError(ValueError):
    """Malformed, oversized or unknown-version header; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Destination:
    """Where the client meant to connect."""

    address: IPAddress
    port: int

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port={self.port}: must be 1..65535")

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


def encode(destination: Destination) -> bytes:
    """The header announcing ``destination`` (24 bytes)."""
    address = destination.address
    wire = b"\0" * 10 + b"\xff\xff" + address.packed if address.version == 4 else address.packed
    tlv = _CONNECT.pack(TLV_CONNECT, CONNECT_WORDS, destination.port, wire)
    return MAGIC + bytes([VERSION, MIN_HEADER_WORDS]) + tlv


def _connect_tlv(tlv: bytes) -> Destination:
    _, words, port, raw = _CONNECT.unpack(tlv)
    if words != CONNECT_WORDS:
        raise ConvertError(f"Connect TLV length {words} words: expected {CONNECT_WORDS} (TCP options unsupported)")
    if port == 0:
        raise ConvertError("Connect TLV: destination port 0")
    wide = ipaddress.IPv6Address(raw)
    address: IPAddress = wide.ipv4_mapped or wide
    if address.is_unspecified:
        raise ConvertError(f"Connect TLV: unspecified destination address {address}")
    return Destination(address, port)


def _parse_tlvs(body: bytes) -> Destination:
    """The TLVs of a complete header (``body`` excludes the fixed header)."""
    destination: Destination | None = None
    offset = 0
    while offset < len(body):
        if len(body) - offset < 2:
            raise ConvertError(f"TLV at byte {FIXED_LEN + offset}: truncated")
        kind, words = body[offset], body[offset + 1]
        size = words * WORD
        if words == 0:
            raise ConvertError(f"TLV type {kind} at byte {FIXED_LEN + offset}: length 0")
        if offset + size > len(body):
            raise ConvertError(f"TLV type {kind}: {size} bytes overrun the header's total length")
        if kind == TLV_CONNECT:
            if destination is not None:
                raise ConvertError("more than one Connect TLV")
            if size != _CONNECT.size:
                raise ConvertError(f"Connect TLV length {words} words: expected {CONNECT_WORDS}")
            destination = _connect_tlv(body[offset : offset + size])
        elif kind < PRIVATE_TLV_MIN:
            raise ConvertError(f"unknown TLV type {kind}")
        offset += size
    if destination is None:
        raise ConvertError("no Connect TLV")
    return destination


class Decoder:
    """Incremental decoder of one header: ``feed`` chunks until it returns the destination."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.destination: Destination | None = None
        self.payload = b""

    @property
    def buffered(self) -> int:
        """Header bytes held while waiting for the rest (never more than ``MAX_HEADER_LEN``)."""
        return len(self._buffer)

    def _check_prefix(self) -> int | None:
        """Validate the fixed header as far as it has arrived; its total length once known."""
        head = bytes(self._buffer[:FIXED_LEN])
        for i, byte in enumerate(head[: len(MAGIC)]):
            if byte != MAGIC[i]:
                raise ConvertError(f"bad magic {head[: len(MAGIC)]!r}: not a Convert header")
        if len(head) > 2 and head[2] != VERSION:
            raise ConvertError(f"unknown version {head[2]} (supported: {VERSION})")
        if len(head) < FIXED_LEN:
            return None
        words = head[3]
        if not MIN_HEADER_WORDS <= words <= MAX_HEADER_WORDS:
            raise ConvertError(f"total length {words} words: must be {MIN_HEADER_WORDS}..{MAX_HEADER_WORDS}")
        return words * WORD

    def feed(self, data: bytes) -> Destination | None:
        """Take the next bytes of the stream; the destination once the header is complete."""
        if self.destination is not None:
            raise RuntimeError("header already decoded: the rest of the stream is payload")
        # Never hold more than one header: bytes beyond it are the caller's payload.
        room = MAX_HEADER_LEN - len(self._buffer)
        self._buffer += data[:room]
        rest = data[room:]
        total = self._check_prefix()
        if total is None or len(self._buffer) < total:
            return None
        header = bytes(self._buffer[:total])
        self.destination = _parse_tlvs(header[FIXED_LEN:])
        self.payload = bytes(self._buffer[total:]) + rest
        self._buffer.clear()
        return self.destination
