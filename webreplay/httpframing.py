"""HTTP/1.1 message framing of recorded responses: chunked bodies and the headers that frame them.

Recordings keep a response as it came off the wire (Mahimahi) or with the headers of the original
connection (HAR). The replay server frames each body itself, so the framing and hop-by-hop headers
of the recording are dropped and chunked bodies are decoded here, with their framing checked.
"""

from __future__ import annotations

import re

from webreplay.errors import CorpusError

# Largest decoded body accepted (the corpus's largest object is under 1 MB): a corrupt chunk-size
# line must not make the loader allocate without bound.
MAX_BODY = 64 * 1024 * 1024
_MAX_SIZE_DIGITS = 16  # hex digits of one chunk-size (64-bit)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(;[^\r\n]*)?")

# Hop-by-hop headers (RFC 9110 7.6.1), the body framing (Content-Length, Transfer-Encoding) and the
# SPDY/2-style "status"/"version" pseudo-headers some HAR exports of SPDY loads carry.
FRAMING_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "status",
        "version",
    }
)


def dechunk(data: bytes, source: str, limit: int = MAX_BODY) -> bytes:
    """Decode a ``Transfer-Encoding: chunked`` body (RFC 9112 7.1); ``source`` names the file in errors.

    Checks every chunk-size line, the CRLF after each chunk, the zero-length last chunk and the
    blank line after the (ignored) trailers; nothing may follow. At most ``limit`` decoded bytes.
    """
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise CorpusError(f"{source}: chunked body truncated: no chunk-size line at byte {pos}")
        line = data[pos:eol]
        match = _CHUNK_SIZE.fullmatch(line)
        if not match or len(match.group(1)) > _MAX_SIZE_DIGITS:
            raise CorpusError(f"{source}: bad chunk-size line {line[:40]!r} at byte {pos}")
        size = int(match.group(1), 16)
        pos = eol + 2
        if size == 0:
            break
        if len(out) + size > limit:
            raise CorpusError(f"{source}: chunked body longer than the limit of {limit} bytes")
        end = pos + size
        if end + 2 > len(data):
            raise CorpusError(f"{source}: chunked body truncated: chunk of {size} bytes at byte {pos}")
        if data[end : end + 2] != b"\r\n":
            raise CorpusError(f"{source}: chunk of {size} bytes at byte {pos} not followed by CRLF")
        out += data[pos:end]
        pos = end + 2
    # Trailer section: header lines up to an empty line.
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise CorpusError(f"{source}: chunked body truncated after the last chunk (no final CRLF)")
        if eol == pos:
            pos += 2
            break
        pos = eol + 2
    if pos != len(data):
        raise CorpusError(f"{source}: {len(data) - pos} bytes after the end of the chunked body")
    return bytes(out)


def is_chunked(headers: tuple[tuple[str, str], ...]) -> bool:
    """True when the last transfer coding of the headers is ``chunked``."""
    codings = [
        c.strip().lower() for name, value in headers if name.lower() == "transfer-encoding" for c in value.split(",")
    ]
    return bool(codings) and codings[-1] == "chunked"


def strip_framing(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The headers without hop-by-hop and framing ones (the server adds its own framing)."""
    return tuple((name, value) for name, value in headers if name.lower() not in FRAMING_HEADERS)


def header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    """The value of the first header called ``name`` (case-insensitive), or None."""
    wanted = name.lower()
    return next((value for key, value in headers if key.lower() == wanted), None)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type value, lower case, without parameters ("" when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()
