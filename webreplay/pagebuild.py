"""From recorded objects to a replayable ``Site``: the keep/exclude rules and the generated main page.

Both loaders (``har.py``, ``mahimahi.py``) hand over the same neutral ``RecordedObject`` list; this
module applies one rule set to both corpora (documented in ``corpus/RULES.md``):

Left out, with the first matching reason (in this order):

1. ``data:`` URLs (inline, never fetched) and other non-http(s) URLs;
2. non-GET requests;
3. URLs the ad/tracker block list (``corpus/adblock.txt``) matches;
4. non-2xx responses (redirects on the way to the main document are reported by the loader
   as "redirect before the main document");
5. 204 No Content responses (pings and beacons: nothing to fetch);
6. requests the recording marks as made by a script or by the browser itself (HAR
   ``_resourceType`` xhr/fetch/ping/beacon/websocket/other; Mahimahi ``X-Requested-With``, or
   neither Referer nor Accept);
7. data fetched by scripts, by media type: JSON, ``text/plain``, form-encoded data;
8. tracking pixels: GIFs of at most 43 bytes, or any 1x1 GIF;
9. a URL already kept (the main document's included): the first recording is kept.

Kept objects are served as follows: HTML, XHTML and CSS (other than the main document) as inert
padding of their recorded size, because their real links would make wget fetch objects that were
never recorded; objects without a recorded body as generated bodies of their recorded size (inert
scripts, valid images, filler bytes); all others (scripts, images, fonts, media) with their real
body. The main document is generated: one reference per kept object (``webreplay.references``: the
markup both wget and a browser fetch), padded to the recorded main document's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from webreplay.adblock import BlockList
from webreplay.bodies import is_link_bearing, main_document, synthesized_body
from webreplay.errors import CorpusError
from webreplay.model import ExcludedObject, RecordedExchange, Site
from webreplay.references import Reference, reference_kind

REASON_NOT_HTTP = "not an http(s) URL (data: or other scheme)"
REASON_NOT_GET = "non-GET request"
REASON_ADBLOCK = "ad or tracker (adblock list)"
REASON_NOT_2XX = "non-2xx response"
REASON_REDIRECT_TO_MAIN = "redirect before the main document"
REASON_NO_CONTENT = "204 No Content (ping or beacon)"
REASON_SCRIPT = "fetched by a script (XHR, fetch, beacon)"
REASON_BACKGROUND = "browser background request (no Referer, no Accept)"
REASON_SCRIPT_DATA = "data for scripts (JSON, text/plain, form data)"
REASON_PIXEL = "tracking pixel (GIF <= 43 bytes or 1x1)"
REASON_DUPLICATE = "duplicate URL (first recording kept)"

PIXEL_MAX_BYTES = 43  # the classic transparent 1x1 GIF89a
_SCRIPT_DATA_TYPES = frozenset({"application/json", "text/json", "text/plain", "application/x-www-form-urlencoded"})
# Headers that describe the recorded body and would be false for a generated one.
_BODY_HEADERS = frozenset({"content-encoding", "content-md5"})


@dataclass(frozen=True)
class RecordedObject:
    """One recorded request and its response, as a loader reads it, before the keep/exclude rules."""

    url: str  # absolute URL as requested
    method: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # response headers, framing and hop-by-hop ones removed
    body: bytes | None  # the body as on the wire (still Content-Encoded), None when not recorded
    size: int  # recorded size of the body on the wire, in bytes
    content_type: str  # media type, lower case, no parameters ("" when unknown)
    script_reason: str | None = None  # REASON_SCRIPT or REASON_BACKGROUND when the recording says so


def split_url(url: str, source: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, target)`` of an absolute http(s) URL; the fragment is dropped."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise CorpusError(f"{source}: not an absolute http(s) URL: {url!r}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as err:
        raise CorpusError(f"{source}: bad port in URL {url!r}") from err
    # The target exactly as written (urlsplit would drop an empty "?").
    rest = url.split("#", 1)[0][len(parts.scheme) + 3 + len(parts.netloc) :]
    return scheme, parts.hostname.lower(), port, rest or "/"


def normalize_url(url: str, source: str) -> str:
    """The URL as ``RecordedExchange.url`` spells it (lower-case scheme and host, no default port)."""
    scheme, host, port, target = split_url(url, source)
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}{'' if port == default else f':{port}'}{target}"


def is_pixel(obj: RecordedObject) -> bool:
    """A GIF of at most 43 bytes, or a GIF whose logical screen is 1x1 pixels."""
    if obj.content_type != "image/gif":
        return False
    if obj.size <= PIXEL_MAX_BYTES:
        return True
    body = obj.body or b""
    return body[:6] in (b"GIF87a", b"GIF89a") and body[6:10] == b"\x01\x00\x01\x00"


def exclusion_reason(obj: RecordedObject, blocklist: BlockList, kept_urls: set[str], source: str) -> str | None:
    """The rule that leaves ``obj`` out (first match, in the order of the module docstring), or None."""
    if urlsplit(obj.url).scheme.lower() not in ("http", "https"):
        return REASON_NOT_HTTP
    if obj.method != "GET":
        return REASON_NOT_GET
    if blocklist.matches(obj.url):
        return REASON_ADBLOCK
    if not 200 <= obj.status <= 299:
        return REASON_NOT_2XX
    if obj.status == 204:
        return REASON_NO_CONTENT
    if obj.script_reason is not None:
        return obj.script_reason
    if obj.content_type in _SCRIPT_DATA_TYPES or obj.content_type.endswith("+json"):
        return REASON_SCRIPT_DATA
    if is_pixel(obj):
        return REASON_PIXEL
    if normalize_url(obj.url, source) in kept_urls:
        return REASON_DUPLICATE
    return None


def _generated_headers(headers: tuple[tuple[str, str], ...], content_type: str) -> tuple[tuple[str, str], ...]:
    kept = tuple((k, v) for k, v in headers if k.lower() not in _BODY_HEADERS)
    if content_type and not any(k.lower() == "content-type" for k, _ in kept):
        kept += (("Content-Type", content_type),)
    return kept


def _exchange(
    url: str,
    obj: RecordedObject,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    synthesized: bool,
    source: str,
) -> RecordedExchange:
    scheme, host, port, target = split_url(url, source)
    return RecordedExchange(
        scheme=scheme,
        host=host,
        port=port,
        method=obj.method,
        target=target,
        status=obj.status,
        reason=obj.reason,
        headers=headers,
        body=body,
        content_type=obj.content_type,
        synthesized=synthesized,
    )


def kept_exchange(obj: RecordedObject, source: str) -> RecordedExchange:
    """How a kept (non-main) object is served: inert HTML/CSS, generated bytes, or its real body."""
    if is_link_bearing(obj.content_type) or obj.body is None:
        body = synthesized_body(obj.content_type, obj.size, seed=obj.url)
        return _exchange(obj.url, obj, _generated_headers(obj.headers, obj.content_type), body, True, source)
    return _exchange(obj.url, obj, obj.headers, obj.body, False, source)


def build_site(
    *,
    name: str,
    corpus: str,
    source: str,
    main_url: str,
    main: RecordedObject | None,
    objects: Sequence[RecordedObject],
    excluded: Sequence[ExcludedObject],
    blocklist: BlockList,
) -> Site:
    """Apply the rules to ``objects`` (everything recorded but the main document and ``excluded``).

    ``main`` is the recorded main document (None when the recording lacks it); its status,
    reason and headers are kept and its recorded size is the minimum size of the generated page.
    """
    main_norm = normalize_url(main_url, source)
    kept_urls = {main_norm}
    kept: list[RecordedExchange] = []
    out = list(excluded)
    for obj in objects:
        reason = exclusion_reason(obj, blocklist, kept_urls, source)
        if reason is not None:
            out.append(ExcludedObject(url=obj.url, reason=reason))
            continue
        exchange = kept_exchange(obj, source)
        kept_urls.add(exchange.url)
        kept.append(exchange)
    if main is None:
        main = RecordedObject(
            url=main_url, method="GET", status=200, reason="OK", headers=(), body=None, size=0, content_type="text/html"
        )
    elif not 200 <= main.status <= 299 or main.method != "GET":
        raise CorpusError(f"{source}: main document {main.url} is {main.method} {main.status}, not a GET 2xx")
    # The generated page is text/html whatever the recording said (the exchange's content_type too).
    main = replace(main, content_type="text/html")
    references = (Reference(e.url, reference_kind(e.url, e.content_type, e.headers, main_norm)) for e in kept)
    page = main_document(name, references, main.size)
    headers = tuple((k, v) for k, v in main.headers if k.lower() not in _BODY_HEADERS | {"content-type"})
    headers += (("Content-Type", "text/html; charset=utf-8"),)
    main_exchange = _exchange(main_norm, main, headers, page, True, source)
    return Site(
        name=name,
        corpus=corpus,
        source=source,
        main_url=main_norm,
        exchanges=(main_exchange, *kept),
        excluded=tuple(out),
    )
