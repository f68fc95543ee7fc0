"""`netd network connect` twice against a real daemon: refused like Docker, a retry idempotent.

Read back from the kernel: the container namespace holds exactly one interface of the network.
"""

from __future__ import annotations

from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon


def test_second_connect_is_refused_and_a_retry_is_idempotent(
    daemon: Daemon, sandbox: Sandbox, host: Namespace
) -> None:
    daemon.cli("network", "create", "web", "--subnet", "10.132.0.0/24")
    c = sandbox.add_ns("c")
    first = daemon.cli("network", "connect", "web", "--netns", c.path, "--format", "json")
    assert '"ifname": "eth0"' in first.stdout

    again = daemon.cli("network", "connect", "web", "--netns", c.path, check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"Error: container {c.name!r} (netns {c.path}) is already connected to network 'web' "
        "as eth0; disconnect it first (a retry with --ifname eth0 returns that endpoint)"
    )
    assert sorted(n for n in c.links() if n != "lo") == ["eth0"]

    # The same interface name: the existing endpoint, 200, nothing new in the kernel.
    status, ep = daemon.request(
        "POST", "/v1/networks/web/connect", {"netns": c.path, "ifname": "eth0"}
    )
    assert status == 200 and ep["addresses"] == ["10.132.0.2/24"], ep
    status, err = daemon.request(
        "POST", "/v1/networks/web/connect", {"netns": c.path, "ifname": "eth1"}
    )
    assert status == 409 and err["error"]["code"] == "already_connected", err
    assert sorted(n for n in c.links() if n != "lo") == ["eth0"]
    _, info = daemon.request("GET", "/v1/networks/web?plumbing=0")
    assert [e["ifname"] for e in info["endpoints"]] == ["eth0"]
    # Another network is a second interface, as usual.
    daemon.cli("network", "create", "db", "--subnet", "10.133.0.0/24")
    daemon.cli("network", "connect", "db", "--netns", c.path)
    assert sorted(n for n in c.links() if n != "lo") == ["eth0", "eth1"]
    assert c.ping("10.132.0.1") and c.ping("10.133.0.1")
