"""The site index of the corpora (``corpus/sites.toml``): which sites exist, where, and their main URL.

Experiments name a site as ``(corpus, name)``, e.g. ``("har", "google.com")`` or
``("mahimahi", "bing.com")``. This module only reads and checks the index; ``corpus.py`` loads
the recordings it points to.
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robe_lab.paths import corpus_dir
from webreplay.errors import CorpusError
from webreplay.pagebuild import normalize_url

CORPUS_DIR = corpus_dir()
CORPORA = ("har", "mahimahi")
_PATH_KEY = {"har": "file", "mahimahi": "folder"}
_OPTIONAL_KEYS = frozenset({"note", "stands_in_for"})


@dataclass(frozen=True)
class SiteEntry:
    """One site of ``sites.toml``."""

    corpus: str
    name: str
    path: str  # recording file (HAR) or folder (Mahimahi), relative to the corpus folder
    main_url: str
    note: str = ""
    stands_in_for: str = ""


def _entry(corpus: str, raw: Any, where: str) -> SiteEntry:
    if not isinstance(raw, dict):
        raise CorpusError(f"{where}: expected a table, got {raw!r}")
    path_key = _PATH_KEY[corpus]
    required = {"name", path_key, "main_url"}
    unknown = set(raw) - required - _OPTIONAL_KEYS
    if unknown:
        raise CorpusError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(required | _OPTIONAL_KEYS)})")
    for key in sorted(required | (set(raw) & _OPTIONAL_KEYS)):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise CorpusError(f"{where}.{key}={raw.get(key)!r}: expected a non-empty string")
    normalize_url(raw["main_url"], f"{where}.main_url")
    return SiteEntry(
        corpus=corpus,
        name=raw["name"],
        path=raw[path_key],
        main_url=raw["main_url"],
        note=raw.get("note", ""),
        stands_in_for=raw.get("stands_in_for", ""),
    )


@functools.cache
def read_index(root: Path = CORPUS_DIR) -> dict[str, tuple[SiteEntry, ...]]:
    """Every corpus of ``root/sites.toml`` with its sites, in file order."""
    path = root / "sites.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise CorpusError(f"{path}: cannot read the site index: {err}") from err
    unknown = set(data) - set(CORPORA)
    if unknown:
        raise CorpusError(f"{path}: unknown corpora {sorted(unknown)} (known: {', '.join(CORPORA)})")
    index: dict[str, tuple[SiteEntry, ...]] = {}
    for corpus in CORPORA:
        raw = data.get(corpus, [])
        if not isinstance(raw, list):
            raise CorpusError(f"{path}: '{corpus}' must be an array of tables ([[{corpus}]])")
        entries = tuple(_entry(corpus, item, f"{path}: {corpus}[{i}]") for i, item in enumerate(raw))
        names = [e.name for e in entries]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise CorpusError(f"{path}: {corpus} sites listed twice: {duplicates}")
        index[corpus] = entries
    return index


def _corpus_entries(corpus: str, root: Path) -> tuple[SiteEntry, ...]:
    if corpus not in CORPORA:
        raise CorpusError(f"unknown corpus {corpus!r} (known: {', '.join(CORPORA)})")
    return read_index(root)[corpus]


def list_sites(corpus: str, root: Path = CORPUS_DIR) -> list[str]:
    """The site names of ``corpus`` ("har" or "mahimahi"), in index order."""
    return [e.name for e in _corpus_entries(corpus, root)]


def site_entry(corpus: str, name: str, root: Path = CORPUS_DIR) -> SiteEntry:
    """The index entry of one site; an unknown name is an error naming the known ones."""
    for entry in _corpus_entries(corpus, root):
        if entry.name == name:
            return entry
    known = ", ".join(list_sites(corpus, root))
    raise CorpusError(f"{root / 'sites.toml'}: unknown {corpus} site {name!r} (known: {known})")


def entry_for_path(corpus: str, path: Path, root: Path = CORPUS_DIR) -> SiteEntry:
    """The index entry whose recording is ``path`` (compared after resolving both)."""
    wanted = path.resolve()
    for entry in _corpus_entries(corpus, root):
        if (root / entry.path).resolve() == wanted:
            return entry
    raise CorpusError(f"{path}: not listed as a {corpus} site in {root / 'sites.toml'}")


def content_hash(corpus: str, names: Sequence[str], root: Path = CORPUS_DIR) -> str:
    """SHA-256 (hex, 16 digits) of everything a replay of ``names`` serves from: the site index, the
    ad-block list and each site's recording (a file, or every file of a folder), by relative path.

    Two sweeps with the same profile but a changed recording get different fingerprints, so a
    resume never mixes loads of two versions of a page.
    """
    files = [root / "sites.toml", root / "adblock.txt"]
    for name in sorted(set(names)):
        recording = root / site_entry(corpus, name, root).path
        files += sorted(p for p in recording.rglob("*") if p.is_file()) if recording.is_dir() else [recording]
    digest = hashlib.sha256()
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CorpusError(f"{path}: cannot read ({err.strerror})") from None
        digest.update(f"{path.relative_to(root)}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    return digest.hexdigest()[:16]
