"""A netd bridge or host veth deleted behind the daemon's back is repaired from link events.

The periodic reconcile pass is pushed out of the way (``reconcile_interval = 3600``), so what
repairs is the link-event watcher (:mod:`netd.link_watch`). The test deletes with ``ip link
del`` in the sandbox host, then waits (a condition, not a sleep) until the kernel shows the
bridge again with its gateway address and both host veths enslaved, and the containers ping
each other again. The time it takes is printed; benchmarks/bench_link_repair.py measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import Daemon

UPPER_BOUND = 10.0  # seconds; the periodic pass would take an hour here


@pytest.fixture
def watching(host: Namespace) -> Iterator[Daemon]:
    d = Daemon(host, firewall="nftables")
    d.config_path().write_text("reconcile_interval = 3600\n")
    d.start()
    try:
        yield d
    finally:
        d.close_checked()


def connect(d: Daemon, c: Namespace) -> dict[str, Any]:
    status, ep = d.request("POST", "/v1/networks/heal/connect", {"netns": c.path})
    assert status == 201, ep
    return dict(ep)


def healed(
    host: Namespace, bridge: str, peers: list[tuple[Namespace, dict[str, Any], str]]
) -> Callable[[], bool]:
    def check() -> bool:
        links = host.links()
        if bridge not in links or host.addresses(bridge) != ["10.135.0.1/24"]:
            return False
        for _, ep, _ in peers:
            if links.get(ep["host_ifname"], {}).get("master") != bridge:
                return False
        # The gateway too: a re-created bridge keeps its MAC, so neighbour caches stay right.
        return all(
            c.ping(target, timeout=1) and c.ping("10.135.0.1", timeout=1) for c, _, target in peers
        )

    return check


def test_deleted_bridge_and_veth_are_repaired_from_events(
    watching: Daemon, host: Namespace, sandbox: Sandbox
) -> None:
    d = watching
    status, net = d.request(
        "POST", "/v1/networks", {"name": "heal", "subnets": [{"subnet": "10.135.0.0/24"}]}
    )
    assert status == 201, net
    bridge = net["bridge"]
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    ep1, ep2 = connect(d, c1), connect(d, c2)
    ip1, ip2 = (ep["addresses"][0].split("/")[0] for ep in (ep1, ep2))
    both = [(c1, ep1, ip2), (c2, ep2, ip1)]
    assert healed(host, bridge, both)()

    host.run("ip", "link", "del", bridge)
    assert bridge not in host.links()
    took = [wait_for("bridge re-created from events", healed(host, bridge, both), UPPER_BOUND)]

    host.run("ip", "link", "del", ep1["host_ifname"])
    assert "eth0" not in c1.links()
    took.append(wait_for("veth re-created from events", healed(host, bridge, both), UPPER_BOUND))
    _, info = d.request("GET", "/v1/networks/heal?plumbing=0")
    assert {e["mac"] for e in info["endpoints"]} == {ep1["mac"], ep2["mac"]}

    # netd's own deletions (a disconnect) are not "repaired"; the next manual one is.
    assert d.request("POST", "/v1/networks/heal/disconnect", {"netns": c2.path})[0] == 200
    host.run("ip", "link", "del", bridge)
    alone = [(c1, ep1, "10.135.0.1")]
    took.append(wait_for("bridge re-created again", healed(host, bridge, alone), UPPER_BOUND))
    assert ep2["host_ifname"] not in host.links()
    print("repaired from link events in (s):", [round(t, 2) for t in took])
    assert d.log().count("deleted behind its back") == 3, d.log()
