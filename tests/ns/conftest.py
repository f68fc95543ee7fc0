"""Fixtures for namespace integration tests: a fresh sandbox (host + containers) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netns_fixtures import Namespace, Sandbox, leftovers
from netns_fixtures.daemon import Daemon


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


@pytest.fixture
def host(sandbox: Sandbox) -> Namespace:
    """The sandbox's host namespace (forwarding on)."""
    return sandbox.add_host()


@pytest.fixture
def daemon(host: Namespace) -> Iterator[Daemon]:
    """A running netd daemon managing the sandbox host (firewall backend: none)."""
    d = Daemon(host).start()
    try:
        yield d
    finally:
        d.close_checked()
