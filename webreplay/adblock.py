"""The ad/tracker block list (``corpus/adblock.txt``): parse it, match URLs, and say it to wget.

File format, one rule per line; blank lines and lines starting with ``#`` are ignored:

* ``doubleclick.net`` -- a host suffix: matches that host and every subdomain of it
  (``ad.doubleclick.net``), never a mere string suffix (``notdoubleclick.net``). This is the
  matching of wget's ``--exclude-domains``.
* ``re:/gen_204`` -- a regular expression searched anywhere in the whole URL (wget's
  ``--reject-regex`` semantics). wget compiles it as a POSIX extended regular expression, Python
  as ``re``: rules must lie in the common subset, so Perl-only syntax (``(?...)`` groups,
  ``\\d``-style classes, lazy quantifiers) is rejected at parse time.

Errors name the file and the line number.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from robe_lab.paths import corpus_dir
from webreplay.errors import CorpusError

_HOST_RULE = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+")
# Syntax Python's re accepts but POSIX ERE (wget's default regex type) does not, or reads differently.
_NOT_POSIX = re.compile(r"\(\?|\\[A-Za-z0-9]|[*+?}]\?")


@dataclass(frozen=True)
class BlockList:
    """Parsed block list: host suffixes (lower case) and URL regular expressions, in file order."""

    hosts: tuple[str, ...]
    regexes: tuple[str, ...]

    def matches(self, url: str) -> bool:
        """True when ``url`` is an ad or tracker object by one of the rules."""
        host = (urlsplit(url).hostname or "").lower()
        if any(host == rule or host.endswith("." + rule) for rule in self.hosts):
            return True
        return any(re.search(rx, url) for rx in self.regexes)

    def rule_for(self, url: str) -> str | None:
        """The first rule (as written in the file) that matches ``url``, or None."""
        host = (urlsplit(url).hostname or "").lower()
        for rule in self.hosts:
            if host == rule or host.endswith("." + rule):
                return rule
        for rx in self.regexes:
            if re.search(rx, url):
                return "re:" + rx
        return None


def parse_blocklist(text: str, source: str) -> BlockList:
    """Parse block-list text; ``source`` names the file in errors (``file:line: ...``)."""
    hosts: list[str] = []
    regexes: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("re:"):
            rx = line[3:]
            if not rx:
                raise CorpusError(f"{source}:{number}: empty regular expression after 're:'")
            bad = _NOT_POSIX.search(rx)
            if bad:
                raise CorpusError(
                    f"{source}:{number}: regular expression {rx!r} uses {bad.group()!r}, which POSIX ERE "
                    "(wget --reject-regex) does not support"
                )
            try:
                re.compile(rx)
            except re.error as err:
                raise CorpusError(f"{source}:{number}: bad regular expression {rx!r}: {err}") from err
            regexes.append(rx)
        else:
            host = line.lower()
            if not _HOST_RULE.fullmatch(host):
                raise CorpusError(
                    f"{source}:{number}: {line!r} is not a host suffix (like 'doubleclick.net') "
                    "or a 're:' regular expression"
                )
            hosts.append(host)
    return BlockList(hosts=tuple(hosts), regexes=tuple(regexes))


def load_blocklist(path: Path) -> BlockList:
    """Read and parse a block-list file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read block list: {err}") from err
    return parse_blocklist(text, str(path))


def wget_args(blocklist: BlockList) -> list[str]:
    """wget options that refuse the same URLs: ``--exclude-domains`` and one combined ``--reject-regex``.

    The generated main documents never reference a blocked URL; these options only make a stray
    reference harmless too.
    """
    args: list[str] = []
    if blocklist.hosts:
        args += ["--exclude-domains", ",".join(blocklist.hosts)]
    if blocklist.regexes:
        args += ["--reject-regex", "|".join(f"({rx})" for rx in blocklist.regexes)]
    return args


DEFAULT_BLOCKLIST = corpus_dir() / "adblock.txt"


@functools.cache
def default_blocklist() -> BlockList:
    """The project's block list, ``corpus/adblock.txt`` (read once)."""
    return load_blocklist(DEFAULT_BLOCKLIST)
