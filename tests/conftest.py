"""Test-wide setup: make netns-fixtures and the test kit importable; skip ns tests without root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "netns-fixtures"))
# tests/kit: shared record builders, fakes and contract checks (`from kit import network`).
sys.path.insert(0, str(ROOT / "tests"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Namespace tests need root; skip them loudly otherwise (CI runs as root)."""
    skip = pytest.mark.skip(reason="namespace tests need root (CI runs them as root)")
    for item in items:
        if "/tests/ns/" in str(item.path):
            item.add_marker(pytest.mark.ns)
            if os.geteuid() != 0:
                item.add_marker(skip)
