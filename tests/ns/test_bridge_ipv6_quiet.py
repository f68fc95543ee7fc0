"""IPv6 only where it is wanted: none on host veth ends, no link-local on IPv4-only attachments.

A bridge port with IPv6 gets fe80::/64 and ff00::/8 routes in the host namespace and sends DAD
and MLD; a container interface with a link-local address floods DAD, MLD and router
solicitations to every port of the bridge. Both grow with the number of containers, so netd
turns them off where nothing uses them; dual-stack attachments keep their link-local address.
"""

from __future__ import annotations

import time

from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Namespace, Sandbox

V4 = "6" * 64
DUAL = "7" * 64


def test_host_ends_have_no_ipv6_and_v4_only_containers_no_link_local(sandbox: Sandbox) -> None:
    host, c4, c6, c6b = (
        sandbox.add_host(),
        sandbox.add_ns("c4"),
        sandbox.add_ns("c6"),
        sandbox.add_ns("c6b"),
    )
    v4 = network(V4, [("10.96.0.0/24", "10.96.0.1")])
    dual = network(DUAL, [("10.97.0.0/24", "10.97.0.1"), ("fd00:97::/64", "fd00:97::1")])
    e4 = endpoint(V4, "cont4", c4.path, ["10.96.0.2/24"])
    e6 = endpoint(DUAL, "cont6", c6.path, ["10.97.0.2/24", "fd00:97::2/64"])
    e6b = endpoint(DUAL, "cont6b", c6b.path, ["10.97.0.3/24", "fd00:97::3/64"])
    steps = [{"op": "ensure_network", "network": n} for n in (v4, dual)]
    steps += [
        {"op": "setup_endpoint", "network": n, "endpoint": e}
        for n, e in ((v4, e4), (dual, e6), (dual, e6b))
    ]
    r = run_agent(host.name, steps)
    assert all(s["ok"] for s in r), r

    for ep in (e4, e6, e6b):
        flag = host.run("cat", f"/proc/sys/net/ipv6/conf/{ep['host_ifname']}/disable_ipv6")
        assert flag.strip() == "1", ep["host_ifname"]
        assert host.ip_json("addr", "show", "dev", ep["host_ifname"])[0].get("addr_info") == []
    # No fe80::/64 route per port in the host namespace: only the bridges have one.
    fe80 = host.run("ip", "-6", "route", "show", "table", "all", "fe80::/64").splitlines()
    assert all(e["host_ifname"] not in line for line in fe80 for e in (e4, e6, e6b)), fe80

    assert link_local(c4) == []
    assert c4.addresses("eth0") == ["10.96.0.2/24"]
    assert len(link_local(c6)) == 1
    # The IPv4-only container still reaches its gateway; dual-stack ones reach each other both ways.
    assert c4.ping("10.96.0.1")
    deadline = time.monotonic() + 5
    while not c6.ping("fd00:97::3") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert c6.ping("fd00:97::3") and c6.ping("fd00:97::1") and c6b.ping("10.97.0.2")


def link_local(ns: Namespace) -> list[str]:
    """fe80:: addresses on the container's eth0."""
    data = ns.ip_json("-6", "addr", "show", "dev", "eth0", "scope", "link")
    return [a["local"] for link in data for a in link.get("addr_info", []) if "local" in a]
