"""Headless Chromium as experiment 2's browser: its switches, its trust store, its command and its outcome.

Debian's ``chromium`` package is driven by Playwright for Python (``experiments/browser_load.py``)
with ``executable_path`` set to the Debian binary: nothing is downloaded at install or run time
(``playwright install`` is never run). A load runs as root in the client's namespace, like wget:

* **DNS**: Chromium's own resolver reads the private ``/etc/resolv.conf`` (``with_resolver``), so
  every lookup goes to the client's DNS stub and over the default path, as wget's do; no
  ``--host-resolver-rules``. DNS over HTTPS is off.
* **No traffic of its own** (each switch says why below): no component updates, field trials,
  network-time or optimization-guide queries, search-engine preconnects, Safe Browsing, sync,
  crash reports or domain-reliability beacons; the on-device model manifest comes from an empty
  local override (``--optimization-guide-manifest-override``), which stops its on-demand update
  request (update.googleapis.com, measured: still sent with ``--disable-component-update``). The DNS
  stub's log shows the result: only the page's names are looked up (checked per load).
* **TLS verified**: the replay's CA is trusted through an NSS database made with ``certutil`` in a
  private ``HOME`` (``$HOME/.pki/nssdb``, where Chromium on Linux reads user trust); a certificate
  problem fails the navigation (``net::ERR_CERT_AUTHORITY_INVALID``) as it would for a user.
* **Fresh state per load**: a new profile folder (no cache, cookies, HSTS or DNS state carried
  between loads), no QUIC (the replay speaks HTTP/1.1 over TCP; QUIC would bypass the proxies).
* **Mixed content**: two recorded sites (youtube.com, instagram.com) are plain HTTP pages on hosts
  that Chromium's built-in HSTS preload list forces to HTTPS; the replay answers those upgraded
  requests from the HTTP recording (counted as ``hsts_upgrades``) and
  ``--allow-running-insecure-content`` lets the page's recorded HTTP scripts and styles load, as
  they did when the page was recorded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from topologies.shell import run

#: The Debian package's browser binary (``/usr/bin/chromium`` is a wrapper script that adds the
#: flags of ``/etc/chromium.d``; we pass every switch ourselves).
CHROMIUM = Path("/usr/lib/chromium/chromium")
#: The nickname of the replay's CA in the NSS database.
CA_NICKNAME = "robe-lab replay CA"

#: Features turned off, each for traffic or behaviour a page load must not have.
DISABLED_FEATURES = (
    "DnsOverHttps",  # lookups only through the system resolver (the client's DNS stub)
    "NetworkTimeServiceQuerying",  # clients2.google.com time queries (measured: sent without this)
    "OptimizationHints",  # optimization guide hint fetches
    "OptimizationGuideModelDownloading",
    "AimEnabled",  # AI mode eligibility requests
    "PreconnectToSearch",  # preconnects to the default search engine
    "MediaRouter",  # cast discovery
    "HttpsUpgrades",  # keep http:// URLs on http (the recorded scheme), as wget does
    "HttpsFirstBalancedModeAutoEnable",
    "InterestFeedContentSuggestions",
    "Translate",
    "AutofillServerCommunication",
    "CertificateTransparencyComponentUpdater",
    "LensOverlay",
    "PaintHolding",  # paint as soon as possible (Playwright's default too)
)


def chromium_args(user_data_dir: Path, manifest_override: Path) -> list[str]:
    """Every command-line switch of one load's browser (Playwright adds none: ``ignore_default_args``)."""
    return [
        "--headless",
        "--no-sandbox",  # root in a Mininet host: the setuid/user-namespace sandbox cannot start
        "--remote-debugging-pipe",  # how Playwright talks to it
        "--no-startup-window",
        f"--user-data-dir={user_data_dir}",  # a fresh profile per load
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",  # TCP only: every connection goes through the client proxy
        "--allow-running-insecure-content",  # recorded http scripts on HSTS-upgraded pages
        # No traffic or work of the browser's own:
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-field-trial-config",
        "--disable-sync",
        "--disable-breakpad",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-component-extensions-with-background-pages",
        "--no-default-browser-check",
        "--no-first-run",
        "--no-pings",
        "--no-service-autorun",
        "--metrics-recording-only",
        "--password-store=basic",
        "--use-mock-keychain",
        f"--optimization-guide-manifest-override={manifest_override}",
        f"--disable-features={','.join(DISABLED_FEATURES)}",
        "--enable-features=SkipListAccountsWithoutGaiaCookies",
        f"--gaia-url={NOWHERE}",  # the account reconciler's ListAccounts (see NOWHERE)
        f"--google-apis-url={NOWHERE}",
        f"--lso-url={NOWHERE}",
        # Page behaviour of a foreground tab, nothing throttled:
        "--disable-back-forward-cache",
        "--disable-background-timer-throttling",
        "--disable-backgrounding-occluded-windows",
        "--disable-renderer-backgrounding",
        "--disable-hang-monitor",
        "--disable-ipc-flooding-protection",
        "--mute-audio",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
    ]


#: The fresh profile's preferences: browser sign-in off.
PROFILE_PREFERENCES = {"signin": {"allowed": False}}
#: Where Chromium's Google account services would go: a closed port on the client's own loopback.
#: Its account reconciler asks accounts.google.com for the signed-in accounts at every start, also
#: with sign-in off (measured: a ListAccounts POST, looked up twice, the second time while the
#: page loads); pointed here, it is refused at once, without a lookup or a packet on a link.
NOWHERE = "http://127.0.0.1:9"

#: An empty on-device model manifest (Chromium then never asks its component updater for one).
EMPTY_MODEL_MANIFEST = {"manifest_path": "", "components": {}}


def browser_versions() -> dict[str, str]:
    """The browser's and the driver's versions, for a run's metadata ('missing' when absent)."""
    import importlib.metadata

    proc = run([str(CHROMIUM), "--version"], check=False) if CHROMIUM.exists() else None
    text = proc.stdout.strip() if proc is not None and proc.returncode == 0 else ""
    try:
        playwright = importlib.metadata.version("playwright")
    except importlib.metadata.PackageNotFoundError:
        playwright = "missing"
    return {"chromium": text or "missing", "playwright": playwright}


def nss_db_commands(db_dir: Path, ca_cert: Path) -> list[list[str]]:
    """certutil commands that make an NSS database in ``db_dir`` trusting ``ca_cert`` for TLS servers."""
    db = f"sql:{db_dir}"
    return [
        ["certutil", "-N", "-d", db, "--empty-password"],
        ["certutil", "-A", "-d", db, "-n", CA_NICKNAME, "-t", "C,,", "-i", str(ca_cert)],
    ]


def make_browser_home(home: Path, ca_cert: Path) -> Path:
    """A private HOME whose NSS database trusts the replay's CA (``home/.pki/nssdb``); returns ``home``."""
    db_dir = home / ".pki" / "nssdb"
    if db_dir.exists():
        shutil.rmtree(db_dir)
    db_dir.mkdir(parents=True)
    for argv in nss_db_commands(db_dir, ca_cert):
        run(argv)
    listed = run(["certutil", "-L", "-d", f"sql:{db_dir}"]).stdout
    if CA_NICKNAME not in listed:
        raise RuntimeError(f"certutil: {CA_NICKNAME!r} not in the new database {db_dir}: {listed!r}")
    return home


def browser_load_command(
    url: str,
    *,
    result: Path,
    home: Path,
    profile_dir: Path,
    timeout_s: float,
    har: Path | None = None,
    python: str = "python3",
) -> list[str]:
    """The argv of one browser load (``python -m experiments.browser_load``), to run in the client."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url={url!r}: must be an http:// or https:// URL")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r}: must be positive")
    argv = [python, "-m", "experiments.browser_load", "--url", url, "--result", str(result), "--home", str(home),
            "--profile-dir", str(profile_dir), "--timeout", f"{timeout_s:g}"]  # fmt: skip
    if har is not None:
        argv += ["--har", str(har)]
    return argv


#: Requests a browser makes on its own, not for the page: answered 404 by the replay and counted
#: apart from page misses (``webreplay.replay_index.is_browser_initiated`` decides it the same way).
BROWSER_INITIATED_PATHS = ("/favicon.ico",)


def _key(url: str) -> str:
    """A URL without its scheme: an HSTS-upgraded request (``https``) fetches the ``http`` recording."""
    if "://" not in url:  # already a key
        return url
    parts = urlsplit(url)
    rest = url.split("://", 1)[1]
    host = (parts.hostname or "").lower()
    return host + rest[len(parts.netloc) :].split("#", 1)[0]


@dataclass(frozen=True)
class BrowserOutcome:
    """What one browser load did, from ``experiments.browser_load``'s result file."""

    error: str  # the navigation's error ("" when it committed)
    load_event: bool  # the load event fired
    nav: dict[str, Any]  # the Navigation Timing entry (ms from navigation start)
    requests: list[dict[str, Any]]  # every request: url, resource_type, status, failure, body_size
    t_goto_ns: int | None  # time.monotonic_ns() just before navigating
    version: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nav_load_ms(self) -> float | None:
        """Navigation start -> load event start (Navigation Timing), or None without a load event."""
        value = self.nav.get("loadEventStart")
        return float(value) if self.load_event and isinstance(value, int | float) and value > 0 else None

    def failed(self) -> list[dict[str, Any]]:
        """Requests that failed in the browser (aborted, blocked, refused: ``failure`` set)."""
        return [r for r in self.requests if r.get("failure")]

    def fetched_keys(self) -> dict[str, int]:
        """Scheme-less URL -> how many requests for it finished with a 2xx answer."""
        keys: dict[str, int] = {}
        for r in self.requests:
            status = r.get("status")
            if not r.get("failure") and isinstance(status, int) and 200 <= status <= 299:
                keys[_key(r["url"])] = keys.get(_key(r["url"]), 0) + 1
        return keys


def read_outcome(path: Path) -> BrowserOutcome:
    """Parse a result file (a missing or broken file is an outcome with that error)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return BrowserOutcome(f"no browser result: {err}", False, {}, [], None, "")
    return BrowserOutcome(
        error=str(data.get("error") or ""),
        load_event=bool(data.get("load_event")),
        nav=dict(data.get("nav") or {}),
        requests=list(data.get("requests") or []),
        t_goto_ns=data.get("t_goto_ns"),
        version=str(data.get("version") or ""),
        extra={k: v for k, v in data.items() if k not in ("error", "load_event", "nav", "requests", "t_goto_ns")},
    )


def is_browser_initiated(url: str, page_urls: Sequence[str]) -> bool:
    """A request the browser made on its own (favicon), not one of the page's objects."""
    return urlsplit(url).path in BROWSER_INITIATED_PATHS and _key(url) not in {_key(u) for u in page_urls}


def script_requests(outcome: BrowserOutcome, page_urls: Sequence[str]) -> list[dict[str, Any]]:
    """Requests the page's running scripts made for URLs that are not page objects.

    The corpus rules leave requests made by scripts out of the page (``corpus/RULES.md``, rule 6):
    the recorded scripts, run again by the browser, may still ask for them (or for URLs built from
    state the replay does not have, e.g. youtube.com's ``/undefined``). The replay answers 404; they
    are counted apart, like the browser's own requests, never as the page's misses.
    """
    page = {_key(u) for u in page_urls}
    return [r for r in outcome.requests if r.get("initiator") == "script" and _key(r["url"]) not in page]


def judge_browser(outcome: BrowserOutcome, page: dict[str, int], misses: int, served: int) -> str:
    """Empty when the load is complete and faithful, else why not.

    ``page``: scheme-less URL -> body length of each page object (the main document included).
    A load is ok when the load event fired, every page object was fetched whole (a 2xx answer
    whose body the browser received in full) and served, there was no page miss (``misses``: those
    that are neither the browser's own requests nor its scripts' requests outside the page), and
    no request failed except those two kinds.
    """
    problems = []
    if outcome.error:
        problems.append(f"navigation failed: {outcome.error}")
    elif not outcome.load_event:
        problems.append("no load event")
    fetched = outcome.fetched_keys()
    missing = [k for k in page if k not in fetched]
    if missing:
        problems.append(f"{len(missing)} page object(s) not fetched (first: {missing[0]})")
    short = [r["url"] for r in outcome.requests if not r.get("failure") and _key(r["url"]) in page
             and isinstance(r.get("status"), int) and 200 <= r["status"] <= 299
             and isinstance(r.get("body_size"), int) and 0 <= r["body_size"] < page[_key(r["url"])]]  # fmt: skip
    if short:
        problems.append(f"{len(short)} page object(s) cut short (first: {short[0]})")
    scripts = {id(r) for r in script_requests(outcome, list(page))}
    failed = [r for r in outcome.failed() if not is_browser_initiated(r["url"], list(page)) and id(r) not in scripts]
    if failed:
        problems.append(f"{len(failed)} failed request(s) (first: {failed[0]['url']}: {failed[0]['failure']})")
    if misses:
        problems.append(f"{misses} page miss(es)")
    if served != len(page):
        problems.append(f"replay served {served} of the page's {len(page)} objects")
    return "; ".join(problems)
