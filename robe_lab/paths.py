"""Where robe-lab finds its data: one configurable root for results and the corpus, package data for profiles.

A checkout is its own root. An installed package (``pip install .``) has no checkout next to it:
``ROBE_LAB_ROOT`` names the folder holding ``corpus/`` and ``results/`` (for example a clone of
the repository); without it the current directory is the root. Profiles travel inside the package
(``experiments/profiles/*.toml`` is package data), so ``--profile quick`` works from anywhere.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

#: Environment variable naming the data root (``corpus/``, ``results/``).
ROOT_ENV = "ROBE_LAB_ROOT"

_SOURCE_TREE = Path(__file__).resolve().parent.parent


def is_checkout(folder: Path) -> bool:
    """Whether ``folder`` is a robe-lab source tree (its pyproject and corpus are there)."""
    return (folder / "pyproject.toml").is_file() and (folder / "corpus" / "sites.toml").is_file()


def project_root() -> Path:
    """The data root: ``$ROBE_LAB_ROOT``, else the checkout this code runs from, else the current folder."""
    configured = os.environ.get(ROOT_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    if is_checkout(_SOURCE_TREE):
        return _SOURCE_TREE
    return Path.cwd().resolve()


def results_dir() -> Path:
    """``<root>/results``: stored results of real runs."""
    return project_root() / "results"


def corpus_dir() -> Path:
    """``<root>/corpus``: the recordings of experiment 2 and their index ``sites.toml``."""
    return project_root() / "corpus"


def package_data(package: str, *parts: str) -> Path:
    """A data folder or file shipped inside ``package`` (e.g. ``package_data("experiments", "profiles")``)."""
    return Path(str(resources.files(package).joinpath(*parts)))
