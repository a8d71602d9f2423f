"""The Convert header codec: round trips, chunked decoding, malformed input, fuzzing."""

import ipaddress
import itertools
import random
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robe.proxy import convert
from robe.proxy.convert import MAX_HEADER_LEN, ConvertError, Decoder, Destination, encode


def _usable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return not address.is_unspecified and mapped is None


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).filter(_usable)
destinations = st.builds(Destination, addresses, st.integers(1, 65535))


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _decode(chunks: list[bytes]) -> tuple[Destination, bytes]:
    decoder = Decoder()
    payload = b""
    found = None
    for chunk in chunks:
        if found is not None:
            payload += chunk
            continue
        found = decoder.feed(chunk)
        if found is not None:
            payload = decoder.payload
        assert decoder.buffered <= MAX_HEADER_LEN
    assert found is not None
    return found, payload


@settings(max_examples=500)
@given(destinations, st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=8))
def test_round_trip_in_any_chunking(destination, payload, cuts):
    wire = encode(destination) + payload
    decoded, rest = _decode(_chunks(wire, cuts))
    assert decoded == destination
    assert type(decoded.address) is type(destination.address)
    assert rest == payload


def test_the_header_layout_is_rfc8803_like():
    wire = encode(Destination(ipaddress.ip_address("198.18.200.2"), 443))
    assert len(wire) == 24
    assert wire[:4] == b"RL\x01\x06"  # magic, version 1, 6 words
    assert wire[4:8] == b"\x0a\x05\x01\xbb"  # Connect TLV (type 10), 5 words, port 443
    assert wire[8:] == b"\0" * 10 + b"\xff\xff" + bytes([198, 18, 200, 2])  # IPv4-mapped
    six = encode(Destination(ipaddress.ip_address("2001:db8::1"), 80))
    assert six[8:] == ipaddress.ip_address("2001:db8::1").packed
    assert str(Destination(ipaddress.ip_address("2001:db8::1"), 80)) == "[2001:db8::1]:80"


def test_header_alone_leaves_no_payload():
    decoder = Decoder()
    assert decoder.feed(encode(Destination(ipaddress.ip_address("198.18.0.1"), 80))) is not None
    assert decoder.payload == b""
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")


def _header(version: int = 1, words: int = 6, tlvs: bytes | None = None, magic: bytes = b"RL") -> bytes:
    if tlvs is None:
        tlvs = encode(Destination(ipaddress.ip_address("198.18.0.1"), 80))[4:]
    return magic + bytes([version, words]) + tlvs


PRIVATE = bytes([200, 1, 0, 0])
CONNECT = encode(Destination(ipaddress.ip_address("198.18.0.1"), 80))[4:]


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "bad magic"),
        (b"\x16\x03\x01\x02\x00", "bad magic"),  # a TLS ClientHello, not redirected through the header
        (b"R", None),  # incomplete, not wrong yet
        (b"RX", "bad magic"),
        (b"RL\x02", "unknown version 2"),
        (b"RL\x00", "unknown version 0"),
        (b"RL\x01\x05", "total length 5 words"),
        (b"RL\x01\x21", "total length 33 words"),
        (_header(words=6, tlvs=bytes([10, 4, 0, 80]) + b"\0" * 16 + b"\0" * 4), "Connect TLV length 4"),
        (_header(words=7, tlvs=CONNECT + bytes([10, 0, 0, 0])), "length 0"),
        (_header(words=11, tlvs=CONNECT + CONNECT), "more than one Connect TLV"),
        (_header(words=7, tlvs=CONNECT + bytes([5, 1, 0, 0])), "unknown TLV type 5"),
        (_header(words=7, tlvs=CONNECT + bytes([200, 2, 0, 0])), "overrun"),
        (_header(words=6, tlvs=PRIVATE * 5 + b""), "no Connect TLV"),
        (_header(tlvs=struct.pack("!BBH16s", 10, 5, 0, b"\0" * 10 + b"\xff\xff" + bytes([198, 18, 0, 1]))), "port 0"),
        (_header(tlvs=struct.pack("!BBH16s", 10, 5, 80, bytes(16))), "unspecified destination"),
    ],
)
def test_malformed_headers_raise_with_a_reason(wire, reason):
    decoder = Decoder()
    if reason is None:
        assert decoder.feed(wire) is None
        return
    with pytest.raises(ConvertError, match=reason) as caught:
        decoder.feed(wire)
    assert caught.value.reason


def test_private_tlvs_are_skipped():
    wire = _header(words=7, tlvs=PRIVATE + CONNECT) + b"payload"
    decoder = Decoder()
    destination = decoder.feed(wire)
    assert destination == Destination(ipaddress.ip_address("198.18.0.1"), 80)
    assert decoder.payload == b"payload"


def test_the_largest_header_is_accepted_and_buffering_is_bounded():
    tlvs = CONNECT + bytes([255, convert.MAX_HEADER_WORDS - 6, 0, 0]) + bytes(4 * (convert.MAX_HEADER_WORDS - 7))
    wire = _header(words=convert.MAX_HEADER_WORDS, tlvs=tlvs)
    assert len(wire) == MAX_HEADER_LEN
    decoder = Decoder()
    for byte in wire[:-1]:
        assert decoder.feed(bytes([byte])) is None
        assert decoder.buffered <= MAX_HEADER_LEN
    assert decoder.feed(wire[-1:] + b"x" * 100_000) is not None
    assert len(decoder.payload) == 100_000


def test_destination_validates_its_port():
    with pytest.raises(ValueError, match="port=0"):
        Destination(ipaddress.ip_address("198.18.0.1"), 0)


def _fuzz_one(rng: random.Random) -> None:
    kind = rng.random()
    if kind < 0.4:
        data = rng.randbytes(rng.randrange(0, 200))
    else:
        # Mutate a valid header (with random trailing TLVs) so the fuzzer gets past the magic.
        base = bytearray(encode(Destination(ipaddress.IPv4Address(rng.getrandbits(32) or 1), rng.randrange(1, 65536))))
        base += rng.randbytes(rng.randrange(0, 40))
        for _ in range(rng.randrange(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        data = bytes(base)
    decoder = Decoder()
    pos = 0
    try:
        while pos < len(data):
            step = rng.randrange(1, 40)
            if decoder.feed(data[pos : pos + step]) is not None:
                return
            assert decoder.buffered <= MAX_HEADER_LEN
            pos += step
    except ConvertError as err:
        assert err.reason


def test_fuzz_random_and_mutated_input_raises_only_convert_error():
    rng = random.Random(8803)
    started = time.monotonic()
    for _ in range(25_000):
        _fuzz_one(rng)
    assert time.monotonic() - started < 20


@settings(max_examples=2000)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_fuzz_hypothesis_chunks(chunks):
    decoder = Decoder()
    try:
        for chunk in chunks:
            if decoder.feed(chunk) is not None:
                break
            assert decoder.buffered <= MAX_HEADER_LEN
    except ConvertError:
        pass
