"""Load a HAR recording (``corpus/har/<site>.har``) as a replayable ``Site``.

Reading rules (the keep/exclude rules shared with Mahimahi are in ``pagebuild.py``; all of them
are written out in ``corpus/RULES.md``):

* **Format.** Plain HAR JSON, or JSONP-wrapped HAR (``onInputData({...});``, the PhantomJS
  netsniff files of CORP-Headers): the wrapper is stripped before parsing.
* **Main document.** When the first entry is a redirect or an HTML response, it starts the main
  document chain: each 3xx entry's ``Location`` leads to the next entry with that URL, the first
  2xx entry is the main document and wget starts at its URL; the redirects are left out as
  "redirect before the main document". Otherwise the recording lacks its main document (the
  PhantomJS yahoo.com.har drops it): the page URL comes from ``pages[0]`` (its ``id``, or its
  ``title`` when that is the URL) and the generated page has no recorded size to pad to.
* **Recorded size** of a body (its size on the wire): the response ``Content-Length`` when
  present; else ``bodySize`` when the response has a ``Content-Encoding`` and ``bodySize > 0``
  (Chrome exports: ``bodySize`` is the encoded transfer size, ``content.size`` the decoded size);
  else ``max(bodySize, content.size)`` (PhantomJS: both are the same lower bound, the bytes
  received at the first chunk; Browsertime: both are the decoded size).
* **Real bodies** come from ``content.text``: base64-decoded when ``encoding`` is ``base64``,
  also when a Chrome 25 export stored a binary type (image, font, ...) as base64 without saying
  so (recognised by decoding strictly to exactly ``content.size`` bytes); text is encoded with the
  charset of its Content-Type (UTF-8 when none or unknown). HAR stores bodies *decoded*: when the
  response had a ``Content-Encoding``, the body is gzip-compressed again (deterministic, level 6,
  mtime 0) and served as ``Content-Encoding: gzip``, so the bytes on the wire stay close to the
  recording's.
* **Entries without a body** (no ``content.text``) get a generated body of the recorded size
  (``synthesized``): inert comment padding for HTML/CSS, URL-seeded bytes otherwise.
* **Script-initiated entries.** When a HAR has ``_resourceType`` (Chrome DevTools), the types
  xhr, fetch, ping, beacon, websocket, eventsource, preflight and other are left out as "fetched
  by a script"; the HARs without it (PhantomJS, old Chrome) rely on the content-type and size rules.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import gzip
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from webreplay.adblock import BlockList, default_blocklist
from webreplay.bodies import is_link_bearing
from webreplay.errors import CorpusError
from webreplay.httpframing import header, media_type, strip_framing
from webreplay.model import ExcludedObject, Site
from webreplay.pagebuild import REASON_REDIRECT_TO_MAIN, REASON_SCRIPT, RecordedObject, build_site, normalize_url

SCRIPT_RESOURCE_TYPES = frozenset({"xhr", "fetch", "ping", "beacon", "websocket", "eventsource", "preflight", "other"})
_JSONP_START = re.compile(r"[A-Za-z_$][\w$.]*\s*\(")
_GZIP_LEVEL = 6


def read_har(path: Path) -> dict[str, Any]:
    """The parsed HAR document of ``path`` (plain JSON or JSONP-wrapped)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read HAR file: {err}") from err
    text = text.strip()
    if not text.startswith("{"):
        match = _JSONP_START.match(text)
        close = text.rfind(")")
        if not match or close < match.end():
            raise CorpusError(f"{path}: neither JSON nor a JSONP call 'name({{...}})' with both parentheses")
        text = text[match.end() : close]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise CorpusError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(document, dict) or not isinstance(document.get("log"), dict):
        raise CorpusError(f"{path}: no 'log' object: not a HAR file")
    return document


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    # bool is an int subclass: a HAR with "status": true is as broken as one without it.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CorpusError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _headers(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list):
        raise CorpusError(f"{where}: expected a list of headers, got {raw!r}")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise CorpusError(f"{where}[{i}]: expected a header object, got {item!r}")
        name = _get(item, "name", str, f"{where}[{i}]")
        value = _get(item, "value", str, f"{where}[{i}]")
        if name.startswith(":"):
            continue  # HTTP/2 pseudo-header: framing of another protocol
        # PhantomJS and Chrome join repeated headers (Set-Cookie) with newlines: one header each.
        out.extend((name, part.strip()) for part in value.split("\n") if part.strip())
    return tuple(out)


def _charset(content_type: str | None) -> str:
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip('"')
            try:
                return codecs.lookup(name).name
            except LookupError:
                return "utf-8"
    return "utf-8"


def _is_textual(ctype: str) -> bool:
    return (
        ctype == ""
        or ctype.startswith("text/")
        or "javascript" in ctype
        or "json" in ctype
        or "xml" in ctype
        or ctype.endswith("ecmascript")
    )


def _body(content: dict[str, Any], ctype: str, charset: str, where: str) -> bytes | None:
    text = content.get("text")
    if text is None:
        return None
    if not isinstance(text, str):
        raise CorpusError(f"{where}.text: expected a string, got {type(text).__name__}")
    decoded_size = content.get("size")
    if text == "" and isinstance(decoded_size, int) and decoded_size > 0:
        return None  # the exporter recorded the size but not the content
    encoding = content.get("encoding")
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise CorpusError(f"{where}.text: bad base64: {err}") from err
    if encoding not in (None, ""):
        raise CorpusError(f"{where}.encoding: unknown encoding {encoding!r}")
    if not _is_textual(ctype) and isinstance(decoded_size, int):
        # Chrome 25 exports binary bodies as base64 without "encoding": accept the exact size only.
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            data = None
        if data is not None and len(data) == decoded_size:
            return data
    try:
        return text.encode(charset)
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _recorded_size(headers: tuple[tuple[str, str], ...], response: dict[str, Any], content: dict[str, Any]) -> int:
    length = header(headers, "content-length")
    if length is not None and length.strip().isdigit():
        return int(length)
    body_size = response.get("bodySize")
    body_size = body_size if isinstance(body_size, int) and not isinstance(body_size, bool) else -1
    coding = (header(headers, "content-encoding") or "identity").strip().lower()
    if coding != "identity" and body_size > 0:
        return body_size
    size = content.get("size")
    size = size if isinstance(size, int) and not isinstance(size, bool) else -1
    return max(body_size, size, 0)


def _entry(entry: Any, where: str) -> RecordedObject:
    if not isinstance(entry, dict):
        raise CorpusError(f"{where}: expected an entry object, got {entry!r}")
    request = _get(entry, "request", dict, where)
    response = _get(entry, "response", dict, where)
    url = _get(request, "url", str, f"{where}.request")
    method = _get(request, "method", str, f"{where}.request").upper()
    status = _get(response, "status", int, f"{where}.response")
    reason = response.get("statusText") if isinstance(response.get("statusText"), str) else ""
    recorded = _headers(response.get("headers", []), f"{where}.response.headers")
    content = _get(response, "content", dict, f"{where}.response")
    mime = content.get("mimeType") if isinstance(content.get("mimeType"), str) else None
    raw_type = header(recorded, "content-type") or mime
    ctype = media_type(raw_type)
    size = _recorded_size(recorded, response, content)
    headers = strip_framing(recorded)
    body = None if url.startswith("data:") else _body(content, ctype, _charset(raw_type), f"{where}.response.content")
    coding = (header(headers, "content-encoding") or "identity").strip().lower()
    if body is not None and coding != "identity" and not is_link_bearing(ctype):
        # HAR bodies are decoded; compress again so the wire carries about the recorded bytes.
        body = gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
        headers = tuple(("Content-Encoding", "gzip") if k.lower() == "content-encoding" else (k, v) for k, v in headers)
    resource_type = entry.get("_resourceType")
    script = (
        REASON_SCRIPT if isinstance(resource_type, str) and resource_type.lower() in SCRIPT_RESOURCE_TYPES else None
    )
    return RecordedObject(
        url=url,
        method=method,
        status=status,
        reason=reason or "",
        headers=headers,
        body=body,
        size=size,
        content_type=ctype,
        script_reason=script,
    )


def _page_url(log: dict[str, Any], path: Path) -> str:
    pages = log.get("pages")
    if isinstance(pages, list) and pages and isinstance(pages[0], dict):
        for key in ("id", "title"):
            value = pages[0].get(key)
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                return value
    raise CorpusError(f"{path}: no main document among the entries and no page URL in pages[0].id/title")


def load_har_site(path: Path, name: str, *, blocklist: BlockList | None = None, source: str | None = None) -> Site:
    """Load the HAR file ``path`` as site ``name`` (rules in the module docstring).

    ``source`` is how the Site names its recording (default: the path as given); ``blocklist``
    defaults to ``corpus/adblock.txt``.
    """
    log = read_har(path)["log"]
    entries = _get(log, "entries", list, f"{path}: log")
    if not entries:
        raise CorpusError(f"{path}: log.entries is empty")
    objects = [_entry(entry, f"{path}: log.entries[{i}]") for i, entry in enumerate(entries)]
    excluded: list[ExcludedObject] = []
    main: RecordedObject | None = None
    chain: set[int] = set()  # indices of the main document and the redirects before it
    first = objects[0]
    if 300 <= first.status <= 399 or first.content_type in ("text/html", "application/xhtml+xml"):
        index = 0
        while 300 <= objects[index].status <= 399:
            hop = objects[index]
            location = header(hop.headers, "location")
            if not location:
                raise CorpusError(f"{path}: log.entries[{index}]: redirect {hop.status} without a Location header")
            target = normalize_url(urljoin(hop.url, location.strip()), str(path))
            following = [
                j for j in range(index + 1, len(objects)) if normalize_url(objects[j].url, str(path)) == target
            ]
            if not following:
                raise CorpusError(f"{path}: log.entries[{index}]: redirect to {target} which was not recorded")
            excluded.append(ExcludedObject(url=hop.url, reason=REASON_REDIRECT_TO_MAIN))
            chain.add(index)
            index = following[0]
        main = objects[index]
        chain.add(index)
        main_url = main.url
    else:
        main_url = _page_url(log, path)
    return build_site(
        name=name,
        corpus="har",
        source=source if source is not None else str(path),
        main_url=main_url,
        main=main,
        objects=[o for i, o in enumerate(objects) if i not in chain],
        excluded=excluded,
        blocklist=blocklist if blocklist is not None else default_blocklist(),
    )
