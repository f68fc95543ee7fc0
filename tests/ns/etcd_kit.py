"""Fixtures for tests of the etcd store: one real etcd per module, in its own sandbox namespace.

``etcd`` starts Debian's etcd on the loopback of a namespace the module creates (data under a
pytest temporary directory) and deletes it all afterwards; ``in_etcd_ns`` puts the test's own
thread into that namespace for the test (``netns_fixtures.etcd.inside``), so the in-process
:class:`netd.store.etcd.EtcdStore` reaches it on 127.0.0.1 without touching the host network.
Import both fixtures into a test module to use them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netns_fixtures import Sandbox, leftovers
from netns_fixtures.etcd import EtcdServer, inside


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A running etcd in a fresh namespace, killed by PID and deleted after the module."""
    box = Sandbox()
    try:
        server = EtcdServer(box.add_ns("etcd"), tmp_path_factory.mktemp("etcd") / "member")
        try:
            yield server.start()
        finally:
            server.stop()
    finally:
        failures = box.close()
        assert not failures, failures
        assert not leftovers(box.prefix), leftovers(box.prefix)


@pytest.fixture
def in_etcd_ns(etcd: EtcdServer) -> Iterator[EtcdServer]:
    """The test's thread inside etcd's namespace for the test (back out before teardown)."""
    with inside(etcd.ns):
        yield etcd
