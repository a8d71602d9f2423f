"""Shared pytest set-up: tests marked ``root`` are skipped (with the reason) unless run as root."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root, network namespaces (run: sudo make test)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
