"""Bodies the replay generates: inert HTML/CSS padding, deterministic filler bytes, the main document.

wget (``--page-requisites``) parses only HTML and CSS responses for further URLs. Every generated
HTML or CSS body is therefore *inert*: a comment of the wanted size, with no URL wget could follow.
Generated scripts are inert comments too, generated images are valid pictures of the recorded size
(``webreplay.imagefill``: a browser stops reading an image it cannot decode), and other generated
bodies are deterministic bytes seeded by the URL, so every run serves the same bytes. The main
document is the only HTML with links: one reference per kept object, of a kind that both
``wget --page-requisites`` and a browser fetch (``webreplay.references``; checked against real wget
by tests/unit/test_corpus.py and against both clients by tests/unit/test_references.py).
"""

from __future__ import annotations

import html
import random
from collections.abc import Iterable

from webreplay.imagefill import padded_image
from webreplay.references import HTML_TYPES, SCRIPT_TYPES, Reference, markup

_HTML_KINDS = HTML_TYPES
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


def inert_script(size: int) -> bytes:
    """``size`` bytes of JavaScript that does nothing: one comment, or spaces when under 4 bytes."""
    return inert_css(size)  # /* ... */ is a comment in both languages


def synthesized_body(content_type: str, size: int, seed: str) -> bytes:
    """A body of exactly ``size`` bytes for an object whose real body is not served: inert HTML, CSS
    and scripts, valid images (a browser stops reading an image it cannot decode), filler bytes
    otherwise."""
    if content_type in _HTML_KINDS:
        return inert_html(size)
    if content_type == "text/css":
        return inert_css(size)
    if content_type in SCRIPT_TYPES:
        return inert_script(size)
    image = padded_image(content_type, size)
    return image if image is not None else filler_bytes(size, seed)


def main_document(title: str, references: Iterable[Reference], min_size: int) -> bytes:
    """The generated main page: markup for every reference (``webreplay.references``), padded to
    ``min_size`` bytes.

    The padding is an HTML comment before ``</body>`` (spaces when the gap is under 7 bytes); a
    document already longer than ``min_size`` is not cut.
    """
    style, elements = markup(references)
    head = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} (robe-lab replay)</title>{style}</head>\n<body>\n"
    )
    tail = "</body></html>\n"
    doc = (head + elements).encode("utf-8")
    end = tail.encode("utf-8")
    gap = min_size - len(doc) - len(end)
    padding = inert_html(gap) if gap > 0 else b""
    return doc + padding + end
