"""RFC 8684 key material: tokens, initial data sequence numbers and MP_JOIN HMACs.

Keys are 64-bit numbers sent in MP_CAPABLE; everything else derives from them with SHA-256
(RFC 8684 section 3.1 and 3.2):

* token = the most significant 32 bits of SHA-256(key);
* IDSN = the least significant 64 bits of SHA-256(key);
* MP_JOIN: the responder B sends HMAC(key = Key-B || Key-A, msg = R-B || R-A) truncated to its
  leftmost 64 bits; the initiator A answers with HMAC(key = Key-A || Key-B, msg = R-A || R-B)
  truncated to 160 bits. Keys are 8 bytes and nonces 4 bytes, big-endian.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct

KEY_BITS = 64
NONCE_BITS = 32
JOIN_ACK_HMAC_BYTES = 8
JOIN_FIN_HMAC_BYTES = 20


def new_key() -> int:
    """A fresh random 64-bit key (never zero, which some stacks treat as absent)."""
    while True:
        key = secrets.randbits(KEY_BITS)
        if key:
            return key


def new_nonce() -> int:
    """A fresh random 32-bit nonce for MP_JOIN."""
    return secrets.randbits(NONCE_BITS)


def _key_bytes(key: int) -> bytes:
    if not 0 <= key < 1 << KEY_BITS:
        raise ValueError(f"key={key!r}: must be a 64-bit unsigned number")
    return struct.pack("!Q", key)


def _nonce_bytes(nonce: int) -> bytes:
    if not 0 <= nonce < 1 << NONCE_BITS:
        raise ValueError(f"nonce={nonce!r}: must be a 32-bit unsigned number")
    return struct.pack("!I", nonce)


def token(key: int) -> int:
    """The connection token derived from ``key``."""
    return int.from_bytes(hashlib.sha256(_key_bytes(key)).digest()[:4], "big")


def idsn(key: int) -> int:
    """The initial data sequence number derived from ``key``."""
    return int.from_bytes(hashlib.sha256(_key_bytes(key)).digest()[-8:], "big")


def join_hmac(key_self: int, key_peer: int, nonce_self: int, nonce_peer: int) -> bytes:
    """Full HMAC-SHA256 a host computes over its own key and nonce first."""
    mac_key = _key_bytes(key_self) + _key_bytes(key_peer)
    return hmac.new(mac_key, _nonce_bytes(nonce_self) + _nonce_bytes(nonce_peer), hashlib.sha256).digest()


def join_ack_hmac(key_b: int, key_a: int, nonce_b: int, nonce_a: int) -> bytes:
    """What the responder B sends in its SYN/ACK (JOIN_ACK): the leftmost 64 bits."""
    return join_hmac(key_b, key_a, nonce_b, nonce_a)[:JOIN_ACK_HMAC_BYTES]


def join_fin_hmac(key_a: int, key_b: int, nonce_a: int, nonce_b: int) -> bytes:
    """What the initiator A sends in its third ACK (JOIN_FIN): the leftmost 160 bits."""
    return join_hmac(key_a, key_b, nonce_a, nonce_b)[:JOIN_FIN_HMAC_BYTES]


def verify(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison of two MACs."""
    return hmac.compare_digest(expected, received)


JOIN_CAP_HMAC_BYTES = 16


def join_cap_hmac(key_a: int, key_b: int, key_b_prime: int) -> bytes:
    """RobE_eSIM's proof for recycling a losing attempt into the connection (Key-A, Key-B): it knows
    both keys and received Key-B' on the losing path. The draft leaves the split open; here
    HMAC-SHA256(key = Key-A || Key-B, msg = Key-B'), leftmost 128 bits."""
    digest = hmac.new(_key_bytes(key_a) + _key_bytes(key_b), _key_bytes(key_b_prime), hashlib.sha256).digest()
    return digest[:JOIN_CAP_HMAC_BYTES]


ATTACH_HMAC_BYTES = 16


def attach_hmac(key_a: int, key_b: int, addr_id: int) -> bytes:
    """The downgrade's proof that a later potentially initial subflow belongs to the connection
    (Key-A, Key-B): HMAC-SHA256(key = Key-A || Key-B, msg = "attach" || address id), leftmost
    128 bits. Key-B only ever went to the client, so knowing Key-A alone (or guessing) is not
    enough to attach."""
    message = b"attach" + bytes([addr_id & 0xFF])
    return hmac.new(_key_bytes(key_a) + _key_bytes(key_b), message, hashlib.sha256).digest()[:ATTACH_HMAC_BYTES]
