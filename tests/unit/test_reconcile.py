"""Planning which tagged kernel links are orphans (pure)."""

from __future__ import annotations

import ipaddress

from netd.model import Endpoint, Network, Subnet
from netd.names import bridge_tag, endpoint_tag
from netd.reconcile import plan_orphans

NET = Network(
    id="a" * 64,
    name="web",
    driver="bridge",
    subnets=(Subnet(ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_address("10.0.0.1")),),
)
EP = Endpoint(
    network_id=NET.id,
    container_id="c1",
    ifname="eth0",
    netns="/run/netns/c1",
    host_ifname="nv1",
    addresses=(ipaddress.ip_interface("10.0.0.2/24"),),
)


def test_owned_links_are_kept() -> None:
    tagged = {bridge_tag(NET.id): "nd-aaaa", endpoint_tag(NET.id, "c1", "eth0"): "nv1"}
    assert plan_orphans(tagged, [NET], [EP]) == []


def test_orphans_found_veths_before_bridges() -> None:
    tagged = {
        bridge_tag("b" * 64): "nd-bbbb",
        endpoint_tag("b" * 64, "c9", "eth0"): "nv9",
        endpoint_tag(NET.id, "gone", "eth1"): "nv8",
        bridge_tag(NET.id): "nd-aaaa",
    }
    plan = plan_orphans(tagged, [NET], [EP])
    assert [name for name, _ in plan] == ["nv8", "nv9", "nd-bbbb"]


def test_ipam_only_endpoints_expect_no_link() -> None:
    ep = Endpoint(
        network_id=NET.id, container_id="c2", ifname="eth0", netns="", host_ifname="", addresses=()
    )
    tagged = {endpoint_tag(NET.id, "c2", "eth0"): "nvx"}
    assert plan_orphans(tagged, [NET], [ep]) == [("nvx", endpoint_tag(NET.id, "c2", "eth0"))]
