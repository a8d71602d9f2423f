"""Valid images of an exact size: the bodies the replay generates for recorded images without a body.

A browser decodes an image while it arrives and, when the bytes turn out not to be an image, stops
reading: Blink aborts the response body (the connection is then closed or reset), so filler bytes
served as ``image/png`` would not be fetched whole (measured: 8 kB of a 300 kB ``image/png`` of
filler read before the reset; wget reads everything). Each generated image is therefore a real
1x1 picture of its media type, padded to the recorded size with data every decoder skips:

* PNG: a private ancillary chunk ``rlPd`` (decoders skip unknown ancillary chunks);
* GIF: comment extension blocks; JPEG: comment (COM) segments;
* WebP: the extended format (VP8X) with an unknown chunk after the image;
* ICO (``image/x-icon``, ``image/vnd.microsoft.icon``): one entry holding a padded PNG;
* SVG: an XML comment.

``padded_image(content_type, size)`` returns None for other media types and for sizes below the
type's smallest valid file (the caller then serves filler bytes: a handful of bytes arrives in one
segment, before any decoder could stop the transfer).
"""

from __future__ import annotations

import struct
import zlib

_FILLER = b"robe-lab padding "  # no "--": safe inside an XML comment


def _fill(size: int) -> bytes:
    return (_FILLER * (size // len(_FILLER) + 1))[:size]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEAD = _PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))  # 1x1, 8-bit grey
_PNG_TAIL = _png_chunk(b"IDAT", zlib.compress(b"\x00\x80")) + _png_chunk(b"IEND", b"")
_CHUNK_OVERHEAD = 12  # length, type, CRC


def png(size: int) -> bytes | None:
    """A 1x1 PNG of exactly ``size`` bytes (None when smaller than the unpadded file)."""
    bare = len(_PNG_HEAD) + len(_PNG_TAIL)
    if size == bare:
        return _PNG_HEAD + _PNG_TAIL
    if size < bare + _CHUNK_OVERHEAD:
        return None
    return _PNG_HEAD + _png_chunk(b"rlPd", _fill(size - bare - _CHUNK_OVERHEAD)) + _PNG_TAIL


# GIF89a, 1x1, a two-colour global table; then (padding) one image and the trailer.
_GIF_HEAD = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
_GIF_TAIL = b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b"


def gif(size: int) -> bytes | None:
    """A 1x1 GIF of exactly ``size`` bytes: comment extensions (sub-blocks of <= 255 bytes) as padding."""
    bare = len(_GIF_HEAD) + len(_GIF_TAIL)
    if size == bare:
        return _GIF_HEAD + _GIF_TAIL
    gap = size - bare - 3  # extension introducer, label, block terminator
    if gap < 2:  # the smallest data sub-block is a length byte and one byte
        return None
    blocks = []
    while gap > 0:
        # a sub-block costs one length byte; never leave a remainder that cannot hold one
        n = min(255, gap - 1) if gap != 257 else 254
        blocks.append(bytes([n]) + _fill(n))
        gap -= n + 1
    return _GIF_HEAD + b"\x21\xfe" + b"".join(blocks) + b"\x00" + _GIF_TAIL


# A 1x1 greyscale baseline JPEG (JFIF), made once with Pillow; padding goes after the APP0 segment.
_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a181616183123251d"
    "283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffc0000b08000100010101"
    "1100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b51000020103030204030505"
    "04040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a"
    "25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a8384858687"
    "88898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2"
    "e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f002bffd9"
)
_JPEG_SPLIT = 20  # SOI + APP0
_COM_MAX = 65533  # payload of one COM segment


def jpeg(size: int) -> bytes | None:
    """A 1x1 JPEG of exactly ``size`` bytes: COM segments (4 bytes of marker and length each) as padding."""
    gap = size - len(_JPEG)
    if gap == 0:
        return _JPEG
    if gap < 4:
        return None
    segments = []
    while gap > 0:
        n = min(_COM_MAX, gap - 4)
        if 0 < gap - (n + 4) < 4:  # the rest could not hold a segment: make this one shorter
            n -= 4
        segments.append(b"\xff\xfe" + struct.pack(">H", n + 2) + _fill(n))
        gap -= n + 4
    return _JPEG[:_JPEG_SPLIT] + b"".join(segments) + _JPEG[_JPEG_SPLIT:]


# 1x1 lossless WebP image data (the VP8L chunk of a file made once with Pillow).
_VP8L = bytes.fromhex("5650384c0f0000002f000000000710058cfe0722a2ff0100")


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def webp(size: int) -> bytes | None:
    """A 1x1 WebP (extended format) of exactly ``size`` bytes: an unknown chunk after the image as padding."""
    vp8x = _riff_chunk(b"VP8X", b"\x00\x00\x00\x00" + (0).to_bytes(3, "little") * 2)
    body = b"WEBP" + vp8x + _VP8L
    pad = size - 8 - len(body) - 8  # RIFF header; the unknown chunk's header
    if pad < 0 or pad % 2:  # RIFF chunks are padded to even lengths: odd sizes cannot be made
        return None
    body += _riff_chunk(b"RLPD", _fill(pad))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def ico(size: int) -> bytes | None:
    """An icon file with one 1x1 entry whose image is a padded PNG, exactly ``size`` bytes."""
    header = 6 + 16
    image = png(size - header)
    if image is None:
        return None
    entry = struct.pack("<BBBBHHII", 1, 1, 0, 0, 1, 32, len(image), header)
    return struct.pack("<HHH", 0, 1, 1) + entry + image


_SVG_OPEN = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1">'
_SVG_CLOSE = b"</svg>"


def svg(size: int) -> bytes | None:
    """A 1x1 SVG of exactly ``size`` bytes: an XML comment as padding."""
    bare = len(_SVG_OPEN) + len(_SVG_CLOSE)
    if size == bare:
        return _SVG_OPEN + _SVG_CLOSE
    if size < bare + 7:
        return None
    return _SVG_OPEN + b"<!--" + _fill(size - bare - 7) + b"-->" + _SVG_CLOSE


_MAKERS = {
    "image/png": png,
    "image/gif": gif,
    "image/jpeg": jpeg,
    "image/jpg": jpeg,
    "image/pjpeg": jpeg,
    "image/webp": webp,
    "image/x-icon": ico,
    "image/vnd.microsoft.icon": ico,
    "image/svg+xml": svg,
}


def padded_image(content_type: str, size: int) -> bytes | None:
    """A valid image of ``content_type`` and exactly ``size`` bytes, or None (type not handled, or too small)."""
    maker = _MAKERS.get(content_type)
    return None if maker is None else maker(size)


def image_types() -> frozenset[str]:
    """The media types ``padded_image`` makes."""
    return frozenset(_MAKERS)
