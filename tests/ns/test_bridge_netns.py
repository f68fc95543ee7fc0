"""Namespace paths are validated before any kernel change: not a netns, or the daemon's own."""

from __future__ import annotations

import pytest
from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Sandbox

NET = "7" * 64


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/proc/self/ns/net", "is the daemon's own network namespace"),
        ("/proc/self/ns/uts", "not a network namespace"),
        ("/etc/hostname", "not a namespace file (not on nsfs)"),
        ("relative/ns", "must be an absolute path"),
        ("/run/netns/missing", "no such file"),
    ],
)
def test_bad_netns_is_refused_and_changes_nothing(sandbox: Sandbox, path: str, rule: str) -> None:
    host = sandbox.add_host()
    net = network(NET, [("10.97.0.0/24", "10.97.0.1")])
    ep = endpoint(NET, "cont1", path, ["10.97.0.2/24"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert r[1]["error"] == {"type": "InvalidInput", "message": f"invalid netns {path!r}: {rule}"}
    assert set(host.links()) == {"lo", "nd-777777777777"}


def test_proc_pid_netns_path_is_accepted(sandbox: Sandbox) -> None:
    """Runtimes may pass /proc/<pid>/ns/net (a magic link) instead of a bind mount."""
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    sleeper = c1.spawn("sleep", "30")
    # `ip netns exec` forks sleep as its child; find the process that is inside c1.
    pids = c1.run("ip", "netns", "pids", c1.name, check=False).split() or [str(sleeper.pid)]
    path = f"/proc/{pids[0]}/ns/net"
    net = network(NET, [("10.97.0.0/24", "10.97.0.1")])
    ep = endpoint(NET, "cont1", path, ["10.97.0.2/24"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert r[1]["ok"], r
    assert c1.addresses("eth0") == ["10.97.0.2/24"]
