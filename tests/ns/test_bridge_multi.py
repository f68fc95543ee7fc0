"""A container on two networks: two interfaces, two bridges, default route per network."""

from __future__ import annotations

from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Sandbox

from netd.names import bridge_name

NET_A, NET_B = "a" * 64, "b" * 64


def test_container_on_two_networks(sandbox: Sandbox) -> None:
    host, c1, peer = sandbox.add_host(), sandbox.add_ns("c1"), sandbox.add_ns("peer")
    net_a = network(NET_A, [("10.91.0.0/24", "10.91.0.1")])
    net_b = network(NET_B, [("10.92.0.0/24", "10.92.0.1")], options={"bridge": "br-b"})
    ea = endpoint(NET_A, "cont1", c1.path, ["10.91.0.2/24"], ifname="eth0")
    eb = endpoint(NET_B, "cont1", c1.path, ["10.92.0.2/24"], ifname="eth1")
    ep = endpoint(NET_B, "peer", peer.path, ["10.92.0.3/24"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net_a},
            {"op": "ensure_network", "network": net_b},
            {"op": "setup_endpoint", "network": net_a, "endpoint": ea},
            {"op": "setup_endpoint", "network": net_b, "endpoint": eb},
            {"op": "setup_endpoint", "network": net_b, "endpoint": ep},
            {"op": "check_endpoint", "network": net_b, "endpoint": eb},
        ],
    )
    assert all(s["ok"] for s in r), r
    assert r[5]["result"] == []
    links = c1.links()
    assert {"eth0", "eth1"} <= set(links)
    assert c1.addresses("eth0") == ["10.91.0.2/24"]
    assert c1.addresses("eth1") == ["10.92.0.2/24"]
    host_links = host.links()
    assert host_links[ea["host_ifname"]]["master"] == bridge_name(NET_A)
    assert host_links[eb["host_ifname"]]["master"] == "br-b"
    defaults = [
        (d["gateway"], d["dev"], d.get("metric", 0)) for d in c1.ip_json("route", "show", "default")
    ]
    assert defaults == [("10.91.0.1", "eth0", 0), ("10.92.0.1", "eth1", 1)]
    assert c1.ping("10.92.0.3") and peer.ping("10.92.0.2")
    # Detaching the first network hands the default route to the second.
    r = run_agent(host.name, [{"op": "teardown_endpoint", "network": net_a, "endpoint": ea}])
    assert r[0]["result"] == []
    assert [d["gateway"] for d in c1.ip_json("route", "show", "default")] == ["10.92.0.1"]
