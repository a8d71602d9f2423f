"""Load a corpus site by name: the recording ``corpus/sites.toml`` lists, read by ``har.py`` or ``mahimahi.py``.

Experiments name a site as ``(corpus, name)``, e.g. ``("har", "google.com")`` or
``("mahimahi", "bing.com")``. Loaded sites are immutable and cached per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

from webreplay.adblock import load_blocklist
from webreplay.errors import CorpusError
from webreplay.har import load_har_site
from webreplay.mahimahi import load_mahimahi_site
from webreplay.model import Site
from webreplay.pagebuild import normalize_url
from webreplay.siteindex import CORPORA, CORPUS_DIR, SiteEntry, list_sites, site_entry
from webreplay.synthetic import CORPUS as SYNTHETIC
from webreplay.synthetic import synthetic_site

__all__ = ["CORPORA", "CORPUS_DIR", "SiteEntry", "all_hosts", "list_sites", "load_site", "site_entry"]


@functools.cache
def load_site(corpus: str, name: str, root: Path = CORPUS_DIR) -> Site:
    """Load site ``name`` of ``corpus`` as listed in ``root/sites.toml`` (filtered by ``root/adblock.txt``);
    corpus ``synthetic`` generates the page (``webreplay.synthetic``)."""
    if corpus == SYNTHETIC:
        return synthetic_site(name)
    entry = site_entry(corpus, name, root)
    blocklist = load_blocklist(root / "adblock.txt")
    source = f"{root.name}/{entry.path}"
    if corpus == "har":
        site = load_har_site(root / entry.path, name, blocklist=blocklist, source=source)
        index_url = normalize_url(entry.main_url, str(root / "sites.toml"))
        if site.main_url != index_url:
            raise CorpusError(
                f"{root / 'sites.toml'}: har site {name!r}: main_url={entry.main_url!r} but the recording "
                f"starts at {site.main_url!r}"
            )
        return site
    return load_mahimahi_site(root / entry.path, name, entry.main_url, blocklist=blocklist, source=source)


def all_hosts(corpus: str, root: Path = CORPUS_DIR) -> list[str]:
    """Every origin host name of every site of ``corpus``, sorted (input for ``model.origin_addresses``)."""
    return sorted({host for name in list_sites(corpus, root) for host in load_site(corpus, name, root).hosts()})
