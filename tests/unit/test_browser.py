"""The browser client's rules (experiments/browser.py) and its TLS trust, against Debian's real Chromium.

The pure parts: the load command, the NSS database commands, the profile's ``client`` field, which
requests are the browser's own, and when a load is ok. The real part: a loopback HTTPS server with
a certificate of the run's CA loads when the private HOME's NSS database (made by ``certutil``)
trusts that CA, and fails with the browser's certificate error when it trusts another CA or none,
as it would for a user.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest

from experiments.browser import (
    CHROMIUM,
    BrowserOutcome,
    browser_load_command,
    is_browser_initiated,
    judge_browser,
    make_browser_home,
    nss_db_commands,
    read_outcome,
    script_requests,
)
from experiments.profile import ProfileError
from experiments.profile2 import load_profile2, parse_profile2
from tests.loopback_http import serve
from webreplay.tlsca import issue_server_cert, make_ca

PAGE = "https://www.site.test/"
OBJECT = "https://cdn.site.test/a.png"


def _request(url: str, *, status: int | None = 200, failure: str | None = None, body_size: int | None = 10,
             initiator: str = "parser") -> dict[str, Any]:  # fmt: skip
    return {"url": url, "status": status, "failure": failure, "body_size": body_size, "initiator": initiator}


def _outcome(*requests: dict[str, Any], error: str = "", load_event: bool = True) -> BrowserOutcome:
    return BrowserOutcome(error, load_event, {"loadEventStart": 812.5}, list(requests), 1, "Chromium 1")


def test_load_command_checks_its_arguments(tmp_path: Path):
    argv = browser_load_command(PAGE, result=tmp_path / "r.json", home=tmp_path / "h", profile_dir=tmp_path / "p",
                                timeout_s=55, har=tmp_path / "x.har", python="/venv/python")  # fmt: skip
    assert argv[:3] == ["/venv/python", "-m", "experiments.browser_load"]
    assert argv[argv.index("--url") + 1] == PAGE and argv[argv.index("--timeout") + 1] == "55"
    assert argv[-2:] == ["--har", str(tmp_path / "x.har")]
    assert "--har" not in browser_load_command(PAGE, result=tmp_path, home=tmp_path, profile_dir=tmp_path,
                                               timeout_s=1)  # fmt: skip
    with pytest.raises(ValueError, match="url='ftp://x/'"):
        browser_load_command("ftp://x/", result=tmp_path, home=tmp_path, profile_dir=tmp_path, timeout_s=1)
    with pytest.raises(ValueError, match="timeout_s=0"):
        browser_load_command(PAGE, result=tmp_path, home=tmp_path, profile_dir=tmp_path, timeout_s=0)


def test_nss_database_trusts_the_ca_for_tls_servers(tmp_path: Path):
    create, add = nss_db_commands(tmp_path / "db", tmp_path / "ca.pem")
    assert create == ["certutil", "-N", "-d", f"sql:{tmp_path / 'db'}", "--empty-password"]
    assert add[add.index("-t") + 1] == "C,,"  # a CA trusted to issue server certificates
    assert add[-2:] == ["-i", str(tmp_path / "ca.pem")]


def test_profile_client_field():
    assert load_profile2("paper").client == "wget"
    browser = load_profile2("browser")
    assert browser.client == "chromium" and browser.repetitions == 30 and len(browser.sites) == 9
    assert set(browser.strategies) == {"mptcp", "robe-sim"} and browser.har_loads > 0
    assert load_profile2("browser-quick").client == "chromium"
    base = {"name": "x", "corpus": "har", "sites": ["google.com"], "strategies": ["mptcp"]}
    for bad, message in (
        ({"client": "firefox"}, "client='firefox': must be one of wget, chromium"),
        ({"client": "chromium", "strategies": ["direct-mptcp"]}, "direct-mptcp"),
        ({"client": "chromium", "connection_reuse": "per-object"}, "connection_reuse='per-object'"),
        ({"har_loads": -1}, "har_loads=-1"),
        ({"har_loads": True}, "har_loads=true: expected a whole number"),
    ):
        with pytest.raises(ProfileError, match=message):
            parse_profile2({**base, **bad}, "test")


def test_browser_initiated_requests_are_only_the_browsers_own():
    page = [PAGE, OBJECT]
    assert is_browser_initiated("https://www.site.test/favicon.ico", page)
    assert is_browser_initiated("http://cdn.site.test/favicon.ico", page)
    # A favicon the page itself references is a page object, and other paths are never the browser's.
    assert not is_browser_initiated("https://www.site.test/favicon.ico", [*page, "http://www.site.test/favicon.ico"])
    assert not is_browser_initiated("https://www.site.test/favicon.ico.png", page)
    assert not is_browser_initiated(OBJECT, page)


def test_a_load_is_ok_only_when_complete():
    page = {"www.site.test/": 100, "cdn.site.test/a.png": 10}
    whole = (_request(PAGE, body_size=100), _request(OBJECT))
    favicon = _request("https://www.site.test/favicon.ico", status=404, failure="net::ERR_ABORTED", initiator="other")
    scripted = _request("https://www.site.test/undefined", status=404, failure="net::ERR_FAILED", initiator="script")
    assert judge_browser(_outcome(*whole, favicon, scripted), page, misses=0, served=2) == ""
    assert script_requests(_outcome(*whole, favicon, scripted), list(page)) == [scripted]
    # The HSTS-upgraded scheme of an http recording still counts as that object.
    assert judge_browser(_outcome(_request("http://www.site.test/", body_size=100), _request(OBJECT)), page, 0, 2) == ""
    cases = {
        "navigation failed: net::ERR_CERT_AUTHORITY_INVALID": (
            _outcome(error="net::ERR_CERT_AUTHORITY_INVALID", load_event=False), 0, 0),
        "no load event": (_outcome(*whole, load_event=False), 0, 2),
        "1 page object(s) not fetched (first: cdn.site.test/a.png)": (_outcome(whole[0]), 0, 1),
        "1 page object(s) cut short": (_outcome(whole[0], _request(OBJECT, body_size=4)), 0, 2),
        "1 failed request(s) (first: https://x.test/b.css: net::ERR_CONNECTION_RESET)": (
            _outcome(*whole, _request("https://x.test/b.css", status=None, failure="net::ERR_CONNECTION_RESET")), 0, 2),
        "1 page miss(es)": (_outcome(*whole), 1, 2),
        "replay served 1 of the page's 2 objects": (_outcome(*whole), 0, 1),
    }  # fmt: skip
    for expected, (outcome, misses, served) in cases.items():
        assert expected in judge_browser(outcome, page, misses, served), expected
    # A page object that fails (even at the favicon's path, when the page references it) fails the load.
    own_icon = {**page, "www.site.test/favicon.ico": 5}
    assert "failed request" in judge_browser(_outcome(*whole, favicon), own_icon, 0, 3)


def test_a_missing_or_broken_result_file_is_a_failed_load(tmp_path: Path):
    missing = read_outcome(tmp_path / "none.json")
    assert missing.error.startswith("no browser result") and missing.nav_load_ms is None
    (tmp_path / "bad.json").write_text("{")
    assert "no browser result" in judge_browser(read_outcome(tmp_path / "bad.json"), {"a/": 1}, 0, 0)


# ---------------------------------------------------------------------------------------------
# TLS verified with Debian's Chromium: the run's CA through an NSS database in a private HOME.

HOST = "secure.site.test"


def https_server(cert: Path, key: Path) -> contextlib.AbstractContextManager[int]:
    """A loopback HTTPS server answering every GET with a small page."""

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = b"<!doctype html><title>ok</title><p>verified</p>"
        handler.send_response(200 if handler.path == "/" else 404)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return serve(respond, context)


@pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("certutil") is None,
                    reason="Debian's chromium and libnss3-tools (certutil) not installed")  # fmt: skip
def test_the_runs_ca_is_trusted_and_any_other_certificate_fails_the_load(tmp_path: Path):
    from experiments.browser_load import load

    run_ca, other_ca = make_ca(tmp_path / "run-ca"), make_ca(tmp_path / "other-ca", common_name="someone else")
    leaf = issue_server_cert(run_ca, [HOST], tmp_path / "leaf")
    wrong_name = issue_server_cert(run_ca, ["elsewhere.site.test"], tmp_path / "wrong")
    trusting_run = make_browser_home(tmp_path / "home-run", run_ca.cert)
    trusting_other = make_browser_home(tmp_path / "home-other", other_ca.cert)
    empty_home = tmp_path / "home-empty"
    empty_home.mkdir()

    def load_with(home: Path, port: int, name: str) -> dict[str, Any]:
        # The name resolves to loopback inside the browser; nothing else is looked up.
        return load(f"https://{HOST}:{port}/", home=home, profile_dir=tmp_path / f"p-{name}", timeout_s=20,
                    settle_s=2, har=None, extra_args=[f"--host-resolver-rules=MAP {HOST} 127.0.0.1"])  # fmt: skip

    with https_server(leaf.cert, leaf.key) as port:
        ok = load_with(trusting_run, port, "ok")
        other = load_with(trusting_other, port, "other")
        untrusted = load_with(empty_home, port, "empty")
    with https_server(wrong_name.cert, wrong_name.key) as port:
        mismatch = load_with(trusting_run, port, "mismatch")
    assert ok["error"] == "" and ok["load_event"] and ok["nav"]["loadEventStart"] > 0, ok
    assert (ok["requests"][0]["url"], ok["requests"][0]["status"]) == (f"https://{HOST}:{port_of(ok)}/", 200)
    for result, reason in ((other, "ERR_CERT_AUTHORITY_INVALID"), (untrusted, "ERR_CERT_AUTHORITY_INVALID"),
                           (mismatch, "ERR_CERT_COMMON_NAME_INVALID")):  # fmt: skip
        assert reason in result["error"] and not result["load_event"], result
        outcome = BrowserOutcome(result["error"], result["load_event"], result["nav"], result["requests"], 0, "")
        assert judge_browser(outcome, {f"{HOST}:{port_of(result)}/": 10}, 0, 1).startswith("navigation failed: ")


def port_of(result: dict[str, Any]) -> int:
    """The port of the loaded URL."""
    return int(str(result["url"]).rsplit(":", 1)[1].strip("/"))
