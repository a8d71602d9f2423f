"""wget as experiment 2's browser: the command line of one page load, and what its log says.

wget fetches the page and its requisites (``--page-requisites``) on every host (``--span-hosts``),
like a browser without scripts; robots.txt is not asked for (``-e robots=off``, it would be a
replay miss), nothing is cached or kept (``--no-cache``, ``--delete-after``), no configuration
file or HSTS database is read or written, and the ad-block list becomes exclusions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: What wget says as User-Agent: a browser of the recordings' time (some sites vary content by it).
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/54.0 Safari/537.36"


def wget_command(
    url: str,
    *,
    scratch_dir: Path,
    ca_certificate: Path,
    log_file: Path,
    exclusions: list[str],
    timeout_s: float = 30.0,
    wget: str = "wget",
    keep_alive: bool = True,
) -> list[str]:
    """The argv of one page load of ``url`` (files land in ``scratch_dir`` and are deleted at once).

    ``keep_alive=False`` makes wget open one connection per object (``--no-http-keep-alive``).
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url={url!r}: must be an http:// or https:// URL")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r}: must be positive")
    return [
        wget, "--no-config", "--no-hsts", "--no-verbose", f"--output-file={log_file}",
        "--page-requisites", "--span-hosts", "-e", "robots=off", "--no-cache", "--delete-after",
        "--no-directories", f"--directory-prefix={scratch_dir}", "--tries=1", f"--timeout={timeout_s:g}",
        f"--ca-certificate={ca_certificate}", f"--user-agent={USER_AGENT}",
        *([] if keep_alive else ["--no-http-keep-alive"]), *exclusions, url,
    ]  # fmt: skip


_FETCHED = re.compile(r"^\S+ \S+ URL:\s*(\S+) \[")
_ERROR = re.compile(r"ERROR (\d{3})|failed:|unable to resolve|Unable to establish", re.IGNORECASE)
_DOWNLOADED = re.compile(r"^Downloaded: (\d+) files?")


@dataclass(frozen=True)
class WgetOutcome:
    """What one wget run did, from its ``--no-verbose`` log and exit status."""

    fetched: list[str]  # URLs downloaded, in order
    errors: list[str]  # log lines reporting a failed request
    downloaded: int | None  # wget's own "Downloaded: N files" summary
    exit_status: int

    @property
    def ok(self) -> bool:
        """wget succeeded and fetched everything it asked for."""
        return self.exit_status == 0 and not self.errors


def parse_wget_log(text: str, exit_status: int) -> WgetOutcome:
    """Read a ``--no-verbose`` wget log."""
    fetched, errors, downloaded = [], [], None
    for line in text.splitlines():
        match = _FETCHED.match(line)
        if match:
            fetched.append(match.group(1))
            continue
        summary = _DOWNLOADED.match(line)
        if summary:
            downloaded = int(summary.group(1))
        elif _ERROR.search(line):
            errors.append(line.strip())
    return WgetOutcome(fetched, errors, downloaded, exit_status)
