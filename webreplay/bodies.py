"""Bodies the replay generates: inert HTML/CSS padding, deterministic filler bytes, the main document.

wget (``--page-requisites``) parses only HTML and CSS responses for further URLs. Every generated
HTML or CSS body is therefore *inert*: a comment of the wanted size, with no URL wget could follow.
Other generated bodies are deterministic bytes seeded by the URL, so every run serves the same
bytes. The main document is the only HTML with links: one tag per kept object, each of a kind that
``wget --page-requisites`` fetches (checked against real wget by tests/unit/test_corpus.py).
"""

from __future__ import annotations

import html
import random
from collections.abc import Iterable

_HTML_KINDS = frozenset({"text/html", "application/xhtml+xml"})
_SCRIPT_KINDS = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/javascript",
        "text/ecmascript",
        "text/x-javascript",
    }
)
_FILLER = b"robe-lab padding "  # no "--" and no "*/": cannot close an HTML or CSS comment early


def is_link_bearing(content_type: str) -> bool:
    """True for the media types wget parses for links (HTML, XHTML and CSS)."""
    return content_type in _HTML_KINDS or content_type == "text/css"


def _fill(size: int) -> bytes:
    repeats = size // len(_FILLER) + 1
    return (_FILLER * repeats)[:size]


def inert_html(size: int) -> bytes:
    """``size`` bytes of HTML without links: one comment, or spaces when under 7 bytes."""
    if size < 7:
        return b" " * size
    return b"<!--" + _fill(size - 7) + b"-->"


def inert_css(size: int) -> bytes:
    """``size`` bytes of CSS without URLs: one comment, or spaces when under 4 bytes."""
    if size < 4:
        return b" " * size
    return b"/*" + _fill(size - 4) + b"*/"


def filler_bytes(size: int, seed: str) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``seed`` in every run (str seeds hash with SHA-512)."""
    return random.Random(seed).randbytes(size)


def synthesized_body(content_type: str, size: int, seed: str) -> bytes:
    """A body of exactly ``size`` bytes for an object whose real body is not served."""
    if content_type in _HTML_KINDS:
        return inert_html(size)
    if content_type == "text/css":
        return inert_css(size)
    return filler_bytes(size, seed)


def requisite_tag(url: str, content_type: str) -> str:
    """The HTML element that makes ``wget --page-requisites`` fetch ``url`` (absolute) once."""
    ref = html.escape(url, quote=True)
    if content_type == "text/css":
        return f'<link rel="stylesheet" href="{ref}">'
    if content_type in _SCRIPT_KINDS:
        return f'<script src="{ref}"></script>'
    if content_type in _HTML_KINDS:
        return f'<iframe src="{ref}"></iframe>'
    if content_type.startswith("image/"):
        return f'<img src="{ref}" alt="">'
    if content_type.startswith("video/"):
        return f'<video src="{ref}"></video>'
    if content_type.startswith("audio/"):
        return f'<audio src="{ref}"></audio>'
    return f'<object data="{ref}"></object>'


def main_document(title: str, requisites: Iterable[tuple[str, str]], min_size: int) -> bytes:
    """The generated main page: a tag for every ``(url, content_type)``, padded to ``min_size`` bytes.

    The padding is an HTML comment before ``</body>`` (spaces when the gap is under 7 bytes); a
    document already longer than ``min_size`` is not cut.
    """
    head = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} (robe-lab replay)</title></head>\n<body>\n"
    )
    tags = "".join(requisite_tag(url, ctype) + "\n" for url, ctype in requisites)
    tail = "</body></html>\n"
    doc = (head + tags).encode("utf-8")
    end = tail.encode("utf-8")
    gap = min_size - len(doc) - len(end)
    padding = inert_html(gap) if gap > 0 else b""
    return doc + padding + end
