"""RobE transport wire format and RFC 8684 key material: vectors, round trips, hostile input."""

import hashlib
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robe.protocol import crypto
from robe.protocol.frames import (
    HEADER,
    MAX_BUFFERED,
    MAX_DATA,
    Cap,
    CapAck,
    CapAttach,
    Data,
    DataAck,
    DataFin,
    Decoder,
    FrameError,
    Join,
    JoinAck,
    JoinCap,
    JoinFin,
    ResetReason,
    Rst,
)


def test_hmac_matches_the_linux_kernel_test_vectors():
    # net/mptcp/crypto_test.c: key and message are taken byte for byte from ASCII strings.
    for key, msg, expected in [
        ("0b0b0b0b0b0b0b0b", "48692054", "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa"),
        ("aaaaaaaaaaaaaaaa", "dddddddd", "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9"),
        ("0102030405060708", "cdcdcdcd", "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d"),
    ]:
        k1, k2 = (int.from_bytes(key.encode()[i : i + 8], "big") for i in (0, 8))
        n1, n2 = (int.from_bytes(msg.encode()[i : i + 4], "big") for i in (0, 4))
        assert crypto.join_hmac(k1, k2, n1, n2).hex() == expected


def test_token_and_idsn_are_the_ends_of_sha256_of_the_key():
    key = 0x0123456789ABCDEF
    digest = hashlib.sha256(struct.pack("!Q", key)).digest()
    assert crypto.token(key) == int.from_bytes(digest[:4], "big")
    assert crypto.idsn(key) == int.from_bytes(digest[24:], "big")
    with pytest.raises(ValueError, match="64-bit"):
        crypto.token(1 << 64)


def test_join_hmacs_verify_only_with_the_right_keys_and_nonces():
    ka, kb, ra, rb = crypto.new_key(), crypto.new_key(), crypto.new_nonce(), crypto.new_nonce()
    b_says = crypto.join_ack_hmac(kb, ka, rb, ra)
    assert len(b_says) == 8 and len(crypto.join_fin_hmac(ka, kb, ra, rb)) == 20
    assert crypto.verify(crypto.join_ack_hmac(kb, ka, rb, ra), b_says)
    assert not crypto.verify(crypto.join_ack_hmac(kb, ka, rb, ra ^ 1), b_says)
    assert crypto.join_fin_hmac(ka, kb, ra, rb) != crypto.join_ack_hmac(kb, ka, rb, ra) + bytes(12)


u8, u32, u64 = (st.integers(0, 2**bits - 1) for bits in (8, 32, 64))
frames = st.one_of(
    st.builds(Cap, u8, u8, u64),
    st.builds(CapAck, u64, u64),
    st.builds(Join, u32, u32, u8),
    st.builds(JoinAck, st.binary(min_size=8, max_size=8), u32),
    st.builds(JoinFin, st.binary(min_size=20, max_size=20)),
    st.builds(JoinCap, u8, u64, st.binary(min_size=16, max_size=16)),
    st.builds(CapAttach, u8, u64, st.binary(min_size=16, max_size=16)),
    st.builds(Data, u64, st.binary(max_size=MAX_DATA)),
    st.builds(DataAck, u64, u32),
    st.builds(DataFin, u64),
    st.builds(Rst, st.sampled_from([int(r) for r in ResetReason])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=12), st.randoms(use_true_random=False))
def test_any_frames_cut_anywhere_decode_to_themselves(sent, rng):
    stream = b"".join(f.encode() for f in sent)
    decoder = Decoder()
    received: list[object] = []
    position = 0
    while position < len(stream):
        step = rng.randint(1, 4000)
        decoder.feed(stream[position : position + step])
        position += step
        received.extend(decoder.frames())
        assert decoder.buffered < MAX_BUFFERED + 4000
    assert received == sent and decoder.buffered == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (HEADER.pack(99, 0, 0), ResetReason.MALFORMED),  # unknown type
        (HEADER.pack(1, 0x80, 10), ResetReason.MALFORMED),  # reserved flags
        (HEADER.pack(1, 0, 3) + b"abc", ResetReason.MALFORMED),  # CAP of the wrong size
        (HEADER.pack(7, 0, 65535), ResetReason.OVERSIZED),  # DATA over the bound: refused before buffering
        (HEADER.pack(7, 0, 2) + b"ab", ResetReason.MALFORMED),  # DATA shorter than its sequence number
        (HEADER.pack(10, 0, 1) + b"\xff", ResetReason.MALFORMED),  # RST with an unknown reason
    ],
)
def test_violations_raise_once_with_the_reason_for_the_rst(raw, reason):
    decoder = Decoder()
    decoder.feed(raw)
    with pytest.raises(FrameError) as err:
        list(decoder.frames())
    assert err.value.reason is reason
    decoder.feed(Rst(0).encode())
    assert list(decoder.frames()) == [] and decoder.buffered == 0  # dead after the first error


def test_fuzz_decoder_never_escapes_and_stays_bounded():
    rng = random.Random(8684)
    valid = [f.encode() for f in (Cap(1, 0, 5), CapAck(6, 7), Data(1, b"xyz"), DataAck(3, 9), Rst(8))]
    for _ in range(100_000):
        if rng.random() < 0.5:
            blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        else:  # a valid frame with a few bytes flipped or cut
            mutable = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 3)):
                mutable[rng.randrange(len(mutable))] = rng.getrandbits(8)
            blob = bytes(mutable[: rng.randint(0, len(mutable))])
        decoder = Decoder()
        decoder.feed(blob)
        try:
            for frame in decoder.frames():
                assert frame.encode()  # whatever decodes re-encodes
        except FrameError as err:
            assert isinstance(err.reason, ResetReason)
        assert decoder.buffered <= len(blob)
