"""Fixtures for namespace integration tests: a fresh sandbox (host + containers) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netns_fixtures import Sandbox, leftovers


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A sandbox whose namespaces are all deleted after the test, pass or fail."""
    box = Sandbox()
    try:
        yield box
    finally:
        failures = box.close()
        assert not failures, failures
        assert not leftovers(box.prefix), leftovers(box.prefix)
