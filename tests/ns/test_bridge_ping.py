"""Two containers on one bridge network reach each other and the gateway, IPv4 and IPv6."""

from __future__ import annotations

import statistics

from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Sandbox

from netd.names import bridge_name, bridge_tag, endpoint_tag

NET = "1" * 64
SUBNETS = [("10.89.0.0/24", "10.89.0.1"), ("fd00:89::/64", "fd00:89::1")]


def test_two_containers_ping_each_other_and_the_gateway(sandbox: Sandbox) -> None:
    host, c1, c2 = sandbox.add_host(), sandbox.add_ns("c1"), sandbox.add_ns("c2")
    net = network(NET, SUBNETS)
    e1 = endpoint(NET, "cont1", c1.path, ["10.89.0.2/24", "fd00:89::2/64"])
    e2 = endpoint(NET, "cont2", c2.path, ["10.89.0.3/24", "fd00:89::3/64"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": e1},
            {"op": "setup_endpoint", "network": net, "endpoint": e2},
            {"op": "check_endpoint", "network": net, "endpoint": e1},
            {"op": "inventory"},
        ],
    )
    assert all(step["ok"] for step in r), r
    bridge = bridge_name(NET)
    host_links = host.links()
    assert host_links[bridge]["operstate"] == "UP"
    assert host_links[bridge]["ifalias"] == bridge_tag(NET)
    assert sorted(host.addresses(bridge)) == ["10.89.0.1/24", "fd00:89::1/64"]
    veth = host_links[e1["host_ifname"]]
    assert veth["master"] == bridge
    assert veth["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert veth["ifalias"] == endpoint_tag(NET, "cont1", "eth0")
    assert veth["address"] == r[1]["result"]["host_mac"]
    assert c1.links()["eth0"]["address"] == r[1]["result"]["mac"]
    assert c1.links()["lo"]["operstate"] == "UNKNOWN"  # lo is up (loopback has no carrier)
    assert sorted(c1.addresses("eth0")) == ["10.89.0.2/24", "fd00:89::2/64"]
    assert r[3]["result"] == []
    assert r[4]["result"] == {
        bridge_tag(NET): bridge,
        endpoint_tag(NET, "cont1", "eth0"): e1["host_ifname"],
        endpoint_tag(NET, "cont2", "eth0"): e2["host_ifname"],
    }
    for target in ("10.89.0.3", "10.89.0.1", "fd00:89::3", "fd00:89::1"):
        assert c1.ping(target), target
    assert c2.ping("10.89.0.2")
    routes = c1.ip_json("route", "show", "default")
    assert [(x["gateway"], x["dev"]) for x in routes] == [("10.89.0.1", "eth0")]
    routes6 = c1.ip_json("-6", "route", "show", "default")
    assert [(x["gateway"], x["dev"]) for x in routes6] == [("fd00:89::1", "eth0")]


def test_setup_latency(sandbox: Sandbox) -> None:
    """Prints setup/teardown p50 (a figure for the report, not an assertion on speed)."""
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    net = network(NET, SUBNETS)
    ep = endpoint(NET, "bench", c1.path, ["10.89.0.9/24", "fd00:89::9/64"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "bench", "network": net, "endpoint": ep, "n": 30},
        ],
    )
    assert r[1]["ok"], r
    setup, teardown = r[1]["result"]["setup_ms"], r[1]["result"]["teardown_ms"]
    print(
        f"\nbridge setup_endpoint p50 {statistics.median(setup):.1f} ms "
        f"(min {min(setup):.1f}), teardown_endpoint p50 {statistics.median(teardown):.1f} ms"
    )
    assert "eth0" not in c1.links()  # the last teardown removed it
