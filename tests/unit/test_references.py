"""The main document's references per media type, checked against both real clients.

One generated page holds an object of every media type of the two corpora (plus the font cases:
CORS allowed, CORS refused, untyped font files), built by the real rules (``pagebuild``,
``references``, generated bodies) and served by a loopback HTTP proxy that writes slowly, so that a
client stopping early shows. wget (``--page-requisites``) and headless Chromium (through
``experiments.browser_load``, ``--proxy-server``) must each fetch exactly the page's objects, each
once and whole, and the browser must report no failed request.
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from experiments.browser import CHROMIUM
from tests.loopback_http import serve
from webreplay.adblock import BlockList
from webreplay.corpus import list_sites, load_site
from webreplay.pagebuild import RecordedObject, build_site
from webreplay.references import reference_kind

MAIN = "http://main.example/"
SIZE = 60_000


def _object(url: str, ctype: str, headers: tuple[tuple[str, str], ...] = ()) -> RecordedObject:
    return RecordedObject(url=url, method="GET", status=200, reason="OK",
                          headers=(("Content-Type", ctype or "application/octet-stream"), *headers), body=None,
                          size=SIZE, content_type=ctype)  # fmt: skip


def corpus_media_types() -> set[str]:
    return {e.content_type for c in ("har", "mahimahi") for n in list_sites(c) for e in load_site(c, n).exchanges[1:]}


def media_page():
    """Every media type of the corpora on another origin, and the font cases."""
    acao = (("Access-Control-Allow-Origin", "*"),)
    objects = [_object(f"http://other.example/t{i}", t) for i, t in enumerate(sorted(corpus_media_types()))]
    objects += [
        _object("http://fonts.example/cors.woff2", "font/woff2", acao),  # @font-face
        _object("http://fonts.example/nocors.woff", "application/font-woff"),  # CORS would refuse: opaque
        _object("http://main.example/same-origin.woff", "application/x-font-woff"),  # same origin: @font-face
        _object("http://fonts.example/untyped.ttf", "application/octet-stream", acao),  # a font by its name
    ]
    return build_site(name="media", corpus="test", source="test", main_url=MAIN, main=None, objects=objects,
                      excluded=[], blocklist=BlockList(hosts=(), regexes=()))  # fmt: skip


@contextlib.contextmanager
def slow_proxy(site) -> Iterator[tuple[int, list[str], list[str]]]:
    """A loopback HTTP proxy answering the site's absolute URLs (404 otherwise), 8 kB per 2 ms."""
    answers = {e.url: e for e in site.exchanges}
    requests: list[str] = []
    cut: list[str] = []

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        requests.append(handler.path)
        found = answers.get(handler.path)
        body = found.body if found else b""
        handler.send_response(found.status if found else 404)
        for key, value in found.headers if found else ():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            for i in range(0, len(body), 8192):
                handler.wfile.write(body[i : i + 8192])
                handler.wfile.flush()
                time.sleep(0.002)
        except OSError:
            cut.append(handler.path)

    with serve(respond) as port:
        yield port, requests, cut


def test_every_media_type_of_the_corpora_has_a_reference_kind():
    site = media_page()
    kinds = {e.url: reference_kind(e.url, e.content_type, e.headers, MAIN) for e in site.exchanges[1:]}
    assert kinds["http://fonts.example/cors.woff2"] == "font"
    assert kinds["http://fonts.example/nocors.woff"] == "opaque"
    assert kinds["http://main.example/same-origin.woff"] == "font"
    assert kinds["http://fonts.example/untyped.ttf"] == "font"
    by_type = {e.content_type: kinds[e.url] for e in site.exchanges[1:] if e.url.startswith("http://other")}
    assert by_type["image/jpeg"] == by_type["image/x-icon"] == by_type["image/svg+xml"] == "image"
    assert by_type["application/x-shockwave-flash"] == by_type["application/octet-stream"] == "opaque"
    assert by_type["text/css"] == "stylesheet" and by_type["text/html"] == "frame"
    assert by_type["video/webm"] == "video" and by_type["audio/webm"] == "audio"
    assert by_type["application/font-woff"] == "opaque"  # cross-origin without CORS header


@pytest.mark.skipif(shutil.which("wget") is None, reason="wget not installed")
def test_wget_fetches_every_object_once():
    site = media_page()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with slow_proxy(site) as (port, requests, cut), tempfile.TemporaryDirectory() as out:
        subprocess.run(["wget", "--no-config", "--quiet", "--page-requisites", "--span-hosts", "--no-directories",
                        "--directory-prefix", out, "--tries=1", "--timeout=10", "-e", "robots=off",
                        "-e", "use_proxy=on", "-e", f"http_proxy=127.0.0.1:{port}", MAIN],
                       check=False, env=env, timeout=60)  # fmt: skip
    assert collections.Counter(requests) == collections.Counter(e.url for e in site.exchanges)
    assert cut == []


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium not installed")
def test_chromium_fetches_every_object_once_whole_and_without_failure(tmp_path: Path):
    from experiments.browser_load import load

    site = media_page()
    with slow_proxy(site) as (port, requests, cut):
        result = load(MAIN, home=tmp_path, profile_dir=tmp_path / "p", timeout_s=30, settle_s=10, har=None,
                      extra_args=[f"--proxy-server=http://127.0.0.1:{port}"])  # fmt: skip
    assert result["error"] == "" and result["load_event"], result
    page = collections.Counter(e.url for e in site.exchanges)
    # The favicon is the browser's own request (answered 404 here, as by the replay).
    assert collections.Counter(r for r in requests if not r.endswith("/favicon.ico")) == page
    assert cut == []
    seen = {r["url"]: r for r in result["requests"]}
    body = {e.url: len(e.body) for e in site.exchanges}
    for url, size in body.items():
        assert seen[url]["failure"] is None and seen[url]["status"] == 200, seen[url]
        assert seen[url]["body_size"] == size, (url, seen[url])
    assert [r for r in result["requests"] if r["failure"]] == []
    assert result["nav"]["loadEventStart"] > 0
