"""The one error type of corpus loading: a recording, list or index file that breaks its format."""

from __future__ import annotations


class CorpusError(ValueError):
    """A corpus file (HAR, Mahimahi record, sites.toml, adblock.txt) is malformed or inconsistent.

    The message always names the file, and where it helps the entry, field or line and the bad value.
    """
