"""``make record-sites``: record live pages into the corpus's HAR format, with ``requests``.

For each URL: the main document (every redirect recorded as its own entry, like a browser's
export), then every requisite ``wget --page-requisites`` would fetch from it (``img``, ``script``,
stylesheet and icon ``link``, ``iframe``, ``embed``, ``source``, ``video``/``audio``, ``object``,
``input type=image``) and the ``url(...)`` references of the stylesheets fetched. Bodies are
stored decoded (as Chrome's DevTools export does: text as text, binary as base64), with the
response headers, so ``webreplay.har`` loads the file like any other. Needs the internet: not run
in CI; its unit test records a page served on loopback.

``python -m webreplay.record --out corpus/recorded https://www.example.com/ ...`` writes one
``<host>.har`` per URL and prints the ``sites.toml`` stanzas to add.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import requests

from robe_lab.cliparse import command_parser

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) robe-lab record-sites (requests)"
MAX_OBJECTS = 400
MAX_BODY = 20_000_000
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)""")
_TEXT_TYPES = ("text/", "application/javascript", "application/x-javascript", "application/json",
               "application/xml", "image/svg+xml")  # fmt: skip


class RecordError(RuntimeError):
    """A page could not be recorded (the message names the URL)."""


class _Requisites(HTMLParser):
    """The URLs wget's ``--page-requisites`` follows in an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v for k, v in attrs if v}
        wanted = {"img": "src", "script": "src", "iframe": "src", "frame": "src", "embed": "src", "source": "src",
                  "video": "src", "audio": "src", "object": "data"}  # fmt: skip
        if tag in wanted and wanted[tag] in values:
            self.urls.append(values[wanted[tag]])
        elif tag == "input" and values.get("type", "").lower() == "image" and "src" in values:
            self.urls.append(values["src"])
        elif tag == "link" and "href" in values:
            rel = values.get("rel", "").lower().split()
            if {"stylesheet", "icon", "shortcut"} & set(rel):
                self.urls.append(values["href"])


def html_requisites(html: str, base_url: str) -> list[str]:
    """Absolute http(s) URLs of the requisites of ``html`` (document order, no duplicates)."""
    parser = _Requisites()
    parser.feed(html)
    return _absolute(parser.urls, base_url)


def css_requisites(css: str, base_url: str) -> list[str]:
    """Absolute http(s) URLs referenced by ``url(...)`` in a stylesheet."""
    return _absolute(_CSS_URL.findall(css), base_url)


def _absolute(urls: Iterable[str], base_url: str) -> list[str]:
    out: dict[str, None] = {}
    for raw in urls:
        url = urldefrag(urljoin(base_url, raw.strip()))[0]
        if urlsplit(url).scheme in ("http", "https"):
            out[url] = None
    return list(out)


@dataclass
class Entry:
    """One recorded request and response."""

    started: dt.datetime
    elapsed_ms: float
    response: requests.Response

    def to_har(self) -> dict[str, Any]:
        """The HAR 1.2 entry (body decoded, as DevTools exports it)."""
        resp = self.response
        mime = resp.headers.get("Content-Type", "")
        body = resp.content
        content: dict[str, Any] = {"size": len(body), "mimeType": mime}
        if body:
            if mime.split(";")[0].strip().lower().startswith(_TEXT_TYPES):
                content["text"] = body.decode(resp.encoding or "utf-8", errors="replace")
            else:
                content["text"], content["encoding"] = base64.b64encode(body).decode(), "base64"
        wire = resp.headers.get("Content-Length")
        request = {"method": "GET", "url": resp.url, "httpVersion": "HTTP/1.1", "cookies": [], "queryString": [],
                   "headers": [{"name": k, "value": v} for k, v in resp.request.headers.items()],
                   "headersSize": -1, "bodySize": 0}  # fmt: skip
        response = {"status": resp.status_code, "statusText": resp.reason or "", "httpVersion": "HTTP/1.1",
                    "cookies": [], "headers": [{"name": k, "value": v} for k, v in resp.headers.items()],
                    "content": content, "redirectURL": resp.headers.get("Location", ""), "headersSize": -1,
                    "bodySize": int(wire) if wire and wire.isdigit() else len(body)}  # fmt: skip
        return {
            "startedDateTime": self.started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "time": round(self.elapsed_ms, 3),
            "request": request,
            "response": response,
            "cache": {},
            "timings": {"send": 0, "wait": round(self.elapsed_ms, 3), "receive": 0},
        }


def _get(session: requests.Session, url: str, timeout_s: float) -> tuple[list[Entry], requests.Response]:
    """GET ``url`` following redirects; an entry per hop."""
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    try:
        resp = session.get(url, timeout=timeout_s, allow_redirects=True, stream=True)
        body = resp.raw.read(MAX_BODY + 1, decode_content=True)
    except requests.RequestException as err:
        raise RecordError(f"{url}: {err}") from err
    if len(body) > MAX_BODY:
        raise RecordError(f"{url}: body larger than {MAX_BODY} bytes")
    resp._content = body
    elapsed = (time.monotonic() - t0) * 1000
    hops = [Entry(started, 0.0, hop) for hop in resp.history]
    return [*hops, Entry(started, elapsed, resp)], resp


def record_page(url: str, session: requests.Session | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """The HAR document of one page load of ``url`` (main document, redirects and requisites)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise RecordError(f"{url!r}: only http:// and https:// URLs can be recorded")
    session = session or requests.Session()
    session.headers.setdefault("User-Agent", USER_AGENT)
    entries, main = _get(session, url, timeout_s)
    if not main.ok:
        raise RecordError(f"{url}: main document answered {main.status_code}")
    queue = html_requisites(main.text, main.url)
    seen = {main.url, *queue}
    while queue and len(entries) < MAX_OBJECTS:
        target = queue.pop(0)
        try:
            fetched, resp = _get(session, target, timeout_s)
        except RecordError as err:
            print(f"record-sites: skipped {err}", file=sys.stderr)
            continue
        entries += fetched
        if "css" in resp.headers.get("Content-Type", "") and resp.ok:
            for ref in css_requisites(resp.text, resp.url):
                if ref not in seen:
                    seen.add(ref)
                    queue.append(ref)
    started = entries[0].started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"log": {
        "version": "1.2",
        "creator": {"name": "robe-lab record-sites", "version": "1", "comment": f"requests {requests.__version__}"},
        "pages": [{"startedDateTime": started, "id": url, "title": url, "pageTimings": {}}],
        "entries": [e.to_har() for e in entries],
    }}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Record every URL given; print the sites.toml stanzas."""
    parser = command_parser("webreplay.record", __doc__)
    parser.add_argument("urls", nargs="+", help="page URLs (http or https)")
    parser.add_argument("--out", type=Path, default=Path("corpus/recorded"), help="folder for the .har files")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for url in args.urls:
        try:
            har = record_page(url, timeout_s=args.timeout)
        except RecordError as err:
            print(f"record-sites: error: {err}", file=sys.stderr)
            status = 1
            continue
        name = urlsplit(url).hostname or "site"
        path = args.out / f"{name}.har"
        path.write_text(json.dumps(har, indent=1))
        entries = har["log"]["entries"]
        main_url = next(e["request"]["url"] for e in entries if not 300 <= e["response"]["status"] <= 399)
        recorded = har["log"]["pages"][0]["startedDateTime"]
        print(f"# {len(entries)} entries -> {path}; add to corpus/sites.toml (file relative to corpus/):")
        print(
            f'[[har]]\nname = "{name}"\nfile = "{path.name}"\nmain_url = "{main_url}"\n'
            f'note = "recorded {recorded} with requests"\n'
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
