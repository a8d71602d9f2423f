"""One page load with headless Chromium, driven by Playwright: ``python -m experiments.browser_load``.

Runs where experiment 2 starts it (the client's namespace, with the private resolv.conf): starts
Debian's Chromium with ``experiments.browser.chromium_args`` (HOME is the private one whose NSS
database trusts the replay's CA), navigates to ``--url`` and waits for the load event, then for the
network to go quiet (requests still running after the load event, such as media, are part of the
page: 500 ms without a request in flight, at most ``--settle`` seconds), and writes one JSON result:

* ``nav``: the Navigation Timing entry (``performance.getEntriesByType("navigation")[0]``, ms from
  navigation start), ``load_event`` (whether it fired), ``error`` (the navigation's error, e.g.
  ``net::ERR_CERT_AUTHORITY_INVALID``);
* ``requests``: every request the page made: URL, method, resource type, HTTP status, the
  browser's failure text (``net::ERR_...``) when it failed, the body bytes received, and its
  initiator type (``parser``, ``script``, ``preload``, ``other``: DevTools' Network domain);
* ``t_goto_ns`` (``time.monotonic_ns()`` just before navigating: the clock of the proxies' logs),
  ``t_loaded_ns`` (when the load event was reported), ``cpu_idle_share`` (all CPUs' idle share in
  between, ``experiments.cpuload``),
  ``version`` (the browser's), ``har`` (written by Playwright when ``--har`` is given; gzip-compressed
  here).

Exit status 0 when a result was written (whatever the load did), 2 when the browser could not start.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.browser import CHROMIUM, EMPTY_MODEL_MANIFEST, PROFILE_PREFERENCES, chromium_args
from experiments.cpuload import cpu_sample, idle_share
from robe_lab.cliparse import command_parser

QUIET_S = 0.5
#: Pause between the browser's start and the navigation (its start-up work settles).
WARM_UP_S = 1.0


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def on_will_be_sent(initiators: dict[str, str], event: dict[str, Any]) -> None:
    """Keep the initiator type of the first request for each URL (DevTools' Network.requestWillBeSent)."""
    initiators.setdefault(str(event["request"]["url"]), str(event["initiator"]["type"]))


def load(url: str, *, home: Path, profile_dir: Path, timeout_s: float, settle_s: float, har: Path | None,
         executable: Path = CHROMIUM, extra_args: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Load ``url`` once; the result dict (see the module docstring). ``extra_args`` are more switches
    (tests use ``--proxy-server``)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Request, sync_playwright

    profile_dir.mkdir(parents=True, exist_ok=True)
    manifest = profile_dir / "model-manifest-override.json"
    manifest.write_text(json.dumps(EMPTY_MODEL_MANIFEST))
    (profile_dir / "profile" / "Default").mkdir(parents=True, exist_ok=True)
    (profile_dir / "profile" / "Default" / "Preferences").write_text(json.dumps(PROFILE_PREFERENCES))
    requests: list[dict[str, Any]] = []
    by_request: dict[int, dict[str, Any]] = {}
    in_flight: set[int] = set()
    initiators: dict[str, str] = {}
    last_change = [time.monotonic()]

    def on_request(request: Request) -> None:
        entry = {"url": request.url, "method": request.method, "resource_type": request.resource_type,
                 "status": None, "failure": None, "body_size": None}  # fmt: skip
        requests.append(entry)
        by_request[id(request)] = entry
        in_flight.add(id(request))
        last_change[0] = time.monotonic()

    def on_done(request: Request, failed: bool) -> None:
        entry = by_request.get(id(request))
        in_flight.discard(id(request))
        last_change[0] = time.monotonic()
        if entry is None:
            return
        if failed:
            entry["failure"] = request.failure or "failed"
        try:
            response = request.response()
            entry["status"] = response.status if response is not None else None
            if not failed:
                entry["body_size"] = request.sizes()["responseBodySize"]
        except PlaywrightError as err:
            entry["failure"] = entry["failure"] or f"no response: {err.message[:200]}"

    result: dict[str, Any] = {"url": url, "error": "", "load_event": False, "nav": {}, "requests": requests}
    env: dict[str, str | float | bool] = {**os.environ, "HOME": str(home)}
    with sync_playwright() as playwright:
        args = [*chromium_args(profile_dir / "profile", manifest), *extra_args]
        browser = playwright.chromium.launch(executable_path=str(executable), ignore_default_args=True, args=args,
                                             env=env, timeout=30_000)  # fmt: skip
        result["version"] = browser.version
        context = browser.new_context(record_har_path=str(har) if har else None, record_har_content="omit",
                                      service_workers="block")  # fmt: skip
        page = context.new_page()
        # Who started each request (the parser, a running script, a preload, the browser itself):
        # DevTools' Network.requestWillBeSent says it; Playwright's events do not.
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", lambda event: on_will_be_sent(initiators, event))
        page.on("request", on_request)
        page.on("requestfinished", lambda r: on_done(r, False))
        page.on("requestfailed", lambda r: on_done(r, True))
        page.on("load", lambda _page: result.__setitem__("load_event", True))
        # The browser's start-up work (profile, renderer, GPU-less compositor) must not compete with
        # the page load on two cores: wait until it is done before navigating.
        page.wait_for_timeout(WARM_UP_S * 1000)
        cpu_before = cpu_sample()
        result["t_goto_ns"] = time.monotonic_ns()
        try:
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
        except PlaywrightError as err:
            result["error"] = err.message.splitlines()[0][:300] if err.message else repr(err)
        result["t_loaded_ns"] = time.monotonic_ns()
        result["cpu_idle_share"] = idle_share(cpu_before, cpu_sample())
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and (in_flight or time.monotonic() - last_change[0] < QUIET_S):
            page.wait_for_timeout(50)
        result["still_in_flight"] = len(in_flight)
        if result["error"]:  # the page never loaded: a load event seen was the browser's error page's
            result["load_event"] = False  # (measured with a certificate error: chrome-error:// fires one)
        try:
            nav = page.evaluate("() => { const e = performance.getEntriesByType('navigation')[0]; "
                                "return e ? e.toJSON() : null; }")  # fmt: skip
            result["nav"] = nav or {}
        except PlaywrightError as err:
            result["nav_error"] = err.message[:200]
        for entry in requests:
            entry["initiator"] = initiators.get(entry["url"], "")
        context.close()  # writes the HAR
        browser.close()
    if har is not None and har.exists():
        packed = har.with_name(har.name + ".gz")
        with har.open("rb") as raw, gzip.open(packed, "wb") as out:
            shutil.copyfileobj(raw, out)
        har.unlink()
        result["har"] = packed.name
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = command_parser("experiments.browser_load", __doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--result", type=Path, required=True, help="JSON result file")
    parser.add_argument("--home", type=Path, required=True, help="HOME with .pki/nssdb trusting the replay's CA")
    parser.add_argument("--profile-dir", type=Path, required=True, help="a fresh folder for the browser profile")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds until the load event")
    parser.add_argument("--settle", type=float, default=10.0, help="at most this long for requests after load")
    parser.add_argument("--har", type=Path, default=None, help="record a HAR (gzip-compressed afterwards)")
    parser.add_argument("--executable", type=Path, default=CHROMIUM)
    args = parser.parse_args(argv)
    if not args.executable.exists():
        print(f"browser_load: {args.executable} not found: run 'make setup' (Debian's chromium)", file=sys.stderr)
        return 2
    try:
        result = load(args.url, home=args.home, profile_dir=args.profile_dir, timeout_s=args.timeout,
                      settle_s=args.settle, har=args.har, executable=args.executable)  # fmt: skip
    except Exception as err:  # the browser did not start: one line for the caller
        print(f"browser_load: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", file=sys.stderr)
        return 2
    _write(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
