"""make record-sites, without the internet: record a page served on loopback, then load it back."""

import http.server
import json
import threading

import pytest

from webreplay.har import load_har_site
from webreplay.record import RecordError, css_requisites, html_requisites, record_page

PAGE = b"""<html><head><link rel="stylesheet" href="/s.css"><script src="/a.js"></script></head>
<body><img src="/i.png"><a href="/not-a-requisite.html">x</a><img src="data:image/gif;base64,R0l"></body></html>"""
FILES = {
    "/": PAGE,
    "/s.css": b"body { background: url('/bg.png') }",
    "/a.js": b"var a = 1;",
    "/i.png": b"\x89PNG" + bytes(range(256)) * 4,
    "/bg.png": b"\x89PNG" + b"\x00" * 300,
}
TYPES = {
    "/": "text/html",
    "/s.css": "text/css",
    "/a.js": "application/javascript",
    "/i.png": "image/png",
    "/bg.png": "image/png",
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/old":
            self.send_response(301)
            self.send_header("Location", "/")
            self.end_headers()
            return
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", TYPES[self.path])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_requisite_extraction_follows_what_wget_fetches():
    assert html_requisites(PAGE.decode(), "http://h/") == ["http://h/s.css", "http://h/a.js", "http://h/i.png"]
    assert css_requisites('a{background:url(x.png)} b{background:url( "/y.gif" )}', "http://h/c/s.css") == [
        "http://h/c/x.png",
        "http://h/y.gif",
    ]


def test_a_recorded_page_loads_back_as_a_site(origin, tmp_path):
    har = record_page(f"{origin}/old")
    urls = [e["request"]["url"] for e in har["log"]["entries"]]
    assert urls == [
        f"{origin}/old",
        f"{origin}/",
        f"{origin}/s.css",
        f"{origin}/a.js",
        f"{origin}/i.png",
        f"{origin}/bg.png",
    ]
    path = tmp_path / "local.har"
    path.write_text(json.dumps(har))
    site = load_har_site(path, "local")
    assert site.main_url == f"{origin}/"
    by_url = {e.url: e for e in site.exchanges}
    assert set(by_url) == {f"{origin}{p}" for p in FILES}
    assert by_url[f"{origin}/i.png"].body == FILES["/i.png"] and not by_url[f"{origin}/i.png"].synthesized
    assert by_url[f"{origin}/a.js"].body == FILES["/a.js"]


def test_bad_urls_are_refused(origin):
    with pytest.raises(RecordError, match="only http"):
        record_page("ftp://example.invalid/")
    with pytest.raises(RecordError, match="404"):
        record_page(f"{origin}/missing")
