"""How the generated main document references each kept object, so that wget and a browser both fetch
exactly the page's objects, each once, whole, without an error (``corpus/RULES.md``).

Each object gets a *kind* from its media type (and, for fonts, the recorded CORS header):

=============  ===========================================  ==============================================
kind           markup                                       why
=============  ===========================================  ==============================================
stylesheet     ``<link rel="stylesheet" href>``             both fetch and parse it (bodies are inert)
script         ``<script src>``                             both fetch it; the browser runs it
frame          ``<iframe src>`` (HTML, XHTML)               both fetch it; a frame delays the load event
image          ``<img src>``                                generated bodies are valid images (imagefill)
video, audio   ``<video|audio preload="auto" src>``         wget fetches ``src``; the browser fetches the
                                                            whole file (after the load event: media never
                                                            delay it)
font           ``@font-face`` in a ``<style>`` of the head  wget reads ``url()`` in inline CSS; the browser
               and a ``<span>`` that uses the family        fetches a font only when text uses it, in CORS
                                                            mode: only when the recorded headers allow the
                                                            page's origin (same origin, or
                                                            ``Access-Control-Allow-Origin`` ``*`` or that
                                                            origin), otherwise ``opaque``
opaque         ``<script async src>``                       everything a browser cannot use as what it is
                                                            (Flash, untyped bytes, fonts CORS would refuse):
                                                            a no-cors fetch that is always read whole and
                                                            delays the load event; ``async`` keeps it from
                                                            blocking the parser
=============  ===========================================  ==============================================

What was measured with Chromium 156 and wget 1.21 (``tests/unit/test_references.py`` checks it with
both on every media type of the corpora): ``<object data>`` and ``<embed src>`` make the browser
*navigate* a nested frame, which it aborts for Flash, fonts and untyped bytes
(``net::ERR_ABORTED``); a cross-origin ``@font-face`` without an allowing CORS header fails
(``net::ERR_FAILED``); ``<img>`` of bytes that are not a picture is cut short (Blink stops reading
when decoding fails); ``<link rel="preload">`` is not followed by wget.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

KINDS = ("stylesheet", "script", "frame", "image", "video", "audio", "font", "opaque")

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
SCRIPT_TYPES = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/javascript",
        "text/ecmascript",
        "text/x-javascript",
    }
)
FONT_TYPES = frozenset(
    {
        "application/font-woff",
        "application/font-woff2",
        "application/x-font-woff",
        "application/x-font-ttf",
        "application/x-font-truetype",
        "application/x-font-opentype",
        "application/font-sfnt",
        "application/vnd.ms-fontobject",
    }
)
#: Untyped objects whose URL names a font file are fonts (instagram.com's recording serves them so).
FONT_EXTENSIONS = (".woff", ".woff2", ".ttf", ".otf", ".eot")
_UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})


@dataclass(frozen=True)
class Reference:
    """One kept object as the main document references it."""

    url: str
    kind: str


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL (default ports left out), lower case."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    host = (parts.hostname or "").lower()
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def is_font(url: str, content_type: str) -> bool:
    """A font by media type, or an untyped object whose path ends in a font file extension."""
    if content_type.startswith("font/") or content_type in FONT_TYPES:
        return True
    return content_type in _UNTYPED and urlsplit(url).path.lower().endswith(FONT_EXTENSIONS)


def cors_allows(url: str, headers: Sequence[tuple[str, str]], page_url: str) -> bool:
    """Whether a browser's CORS check (no credentials) passes for ``url`` fetched by the page at
    ``page_url`` with these recorded response headers: same origin, or ``Access-Control-Allow-Origin``
    ``*`` or the page's origin."""
    page = origin(page_url)
    if origin(url) == page:
        return True
    allowed = [v.strip() for k, v in headers if k.lower() == "access-control-allow-origin"]
    return len(allowed) == 1 and allowed[0] in ("*", page)


def reference_kind(url: str, content_type: str, headers: Sequence[tuple[str, str]], page_url: str) -> str:
    """The kind of reference (see the module docstring) for a kept object of the page at ``page_url``."""
    if content_type == "text/css":
        return "stylesheet"
    if content_type in SCRIPT_TYPES:
        return "script"
    if content_type in HTML_TYPES:
        return "frame"
    if is_font(url, content_type):
        return "font" if cors_allows(url, headers, page_url) else "opaque"
    for kind in ("image", "video", "audio"):
        if content_type.startswith(kind + "/"):
            return kind
    return "opaque"


def _font_family(index: int) -> str:
    return f"rl-font-{index}"


def markup(references: Iterable[Reference]) -> tuple[str, str]:
    """(head, body) HTML for the references, in order: a ``<style>`` with the ``@font-face`` rules
    (empty when there is no font) and one element per reference."""
    rules: list[str] = []
    elements: list[str] = []
    for ref in references:
        url = html.escape(ref.url, quote=True)
        if ref.kind == "stylesheet":
            elements.append(f'<link rel="stylesheet" href="{url}">')
        elif ref.kind == "script":
            elements.append(f'<script src="{url}"></script>')
        elif ref.kind == "frame":
            elements.append(f'<iframe src="{url}"></iframe>')
        elif ref.kind == "image":
            elements.append(f'<img src="{url}" alt="">')
        elif ref.kind in ("video", "audio"):
            elements.append(f'<{ref.kind} preload="auto" src="{url}"></{ref.kind}>')
        elif ref.kind == "font":
            family = _font_family(len(rules))
            # CSS text inside <style> is not HTML-unescaped: the URL goes in raw (corpus URLs hold no
            # quote, backslash or '<', checked by tests/unit/test_corpus.py).
            rules.append(f'@font-face{{font-family:"{family}";src:url("{ref.url}")}}')
            elements.append(f"<span style=\"font-family:'{family}'\">robe-lab</span>")
        elif ref.kind == "opaque":
            elements.append(f'<script async src="{url}"></script>')
        else:
            raise ValueError(f"kind={ref.kind!r}: unknown (known: {', '.join(KINDS)})")
    head = f"<style>{''.join(rules)}</style>" if rules else ""
    return head, "".join(e + "\n" for e in elements)
