"""The fixtures' guard: nothing is configured in the machine's initial network namespace."""

from __future__ import annotations

import os

import pytest
from netns_fixtures import (
    InitialNamespaceError,
    Namespace,
    Sandbox,
    in_initial_netns,
    is_initial_netns_path,
    refuse_initial_netns,
)
from netns_fixtures.daemon import Daemon


def test_refuses_in_the_initial_namespace() -> None:
    # The test runner itself runs in the machine's namespace (CI, developers' machines).
    if not in_initial_netns():
        pytest.skip("this test process does not run in the initial namespace")
    with pytest.raises(InitialNamespaceError, match="initial network namespace"):
        refuse_initial_netns("configure links")


class InitialNs(Namespace):
    """A Namespace whose path is the initial namespace, as a careless caller could build."""

    @property
    def path(self) -> str:
        return "/proc/self/ns/net"


def test_daemon_fixture_refuses_the_initial_namespace() -> None:
    if not is_initial_netns_path("/proc/self/ns/net"):
        pytest.skip("this test process does not run in the initial namespace")
    fake_host = InitialNs("not-a-sandbox", Sandbox(prefix="ntest-guard"))
    d = Daemon(fake_host)
    try:
        with pytest.raises(InitialNamespaceError):
            d.start()
        assert d.proc is None  # nothing was started
    finally:
        d.close()
    assert not os.path.exists(d.socket)
