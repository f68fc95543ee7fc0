"""Fixtures for the fuzz tests against a real daemon: the namespace fixtures, reused.

``sandbox``, ``host`` and ``daemon`` come from ``tests/ns/conftest.py`` (loaded by path: the
test directories are not packages). Like namespace tests, these need root and are skipped
loudly without it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "netd_tests_ns_conftest", Path(__file__).resolve().parent.parent / "ns" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_ns = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ns)

sandbox = _ns.sandbox
host = _ns.host
daemon = _ns.daemon


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fuzz tests against the daemon need root (namespaces); skip them loudly otherwise."""
    skip = pytest.mark.skip(reason="fuzz tests against the daemon need root (CI runs as root)")
    for item in items:
        if "/tests/fuzz/" in str(item.path):
            item.add_marker(pytest.mark.ns)
            if os.geteuid() != 0:
                item.add_marker(skip)
