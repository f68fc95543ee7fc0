"""check_endpoint compares the kernel with the record and names each problem precisely."""

from __future__ import annotations

from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Sandbox

NET = "6" * 64


def test_check_reports_missing_address_route_and_master(sandbox: Sandbox) -> None:
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    net = network(NET, [("10.96.0.0/24", "10.96.0.1")])
    ep = endpoint(NET, "cont1", c1.path, ["10.96.0.5/24"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert all(s["ok"] for s in r), r
    c1.run("ip", "addr", "del", "10.96.0.5/24", "dev", "eth0")  # takes the routes with it
    host.run("ip", "link", "set", ep["host_ifname"], "nomaster")
    r = run_agent(host.name, [{"op": "check_endpoint", "network": net, "endpoint": ep}])
    host_if = ep["host_ifname"]
    assert r[0]["result"] == [
        f'host veth "{host_if}" is not enslaved to bridge "nd-666666666666"',
        f"address 10.96.0.5/24 missing on eth0 in {c1.path}",
        f"default route via 10.96.0.1 missing on eth0 in {c1.path}",
    ]


def test_check_reports_missing_interface_and_netns(sandbox: Sandbox) -> None:
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    net = network(NET, [("10.96.0.0/24", "10.96.0.1")])
    ep = endpoint(NET, "cont1", c1.path, ["10.96.0.5/24"])
    gone = endpoint(NET, "cont2", "/run/netns/nope", ["10.96.0.6/24"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "check_endpoint", "network": net, "endpoint": ep},
            {"op": "check_endpoint", "network": net, "endpoint": gone},
        ],
    )
    assert r[1]["result"] == [
        f'host veth "{ep["host_ifname"]}" missing',
        f"interface eth0 in {c1.path} missing",
    ]
    assert r[2]["result"] == [
        f'host veth "{gone["host_ifname"]}" missing',
        "netns '/run/netns/nope' unusable: no such file",
    ]
