"""Teardown leaves nothing: no veth on the host, no interface or address in the container."""

from __future__ import annotations

from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Sandbox

from netd.names import bridge_name

NET = "2" * 64


def test_teardown_endpoint_and_network_leave_nothing(sandbox: Sandbox) -> None:
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    net = network(NET, [("10.90.0.0/24", "10.90.0.1"), ("fd00:90::/64", "fd00:90::1")])
    ep = endpoint(NET, "cont1", c1.path, ["10.90.0.2/24", "fd00:90::2/64"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert all(s["ok"] for s in r), r
    assert ep["host_ifname"] in host.links()
    r = run_agent(
        host.name,
        [
            {"op": "teardown_endpoint", "network": net, "endpoint": ep},
            {"op": "teardown_endpoint", "network": net, "endpoint": ep},  # idempotent
            {"op": "inventory"},
            {"op": "teardown_network", "network": net},
            {"op": "teardown_network", "network": net},
        ],
    )
    assert [s["result"] for s in r] == [[], [], {f"netd:{NET}": bridge_name(NET)}, [], []]
    assert set(host.links()) == {"lo"}
    assert set(c1.links()) == {"lo"}
    assert c1.ip_json("-6", "addr", "show", "scope", "global") == []
    assert c1.ip_json("route", "show") == []


def test_teardown_with_gone_or_empty_netns_is_not_an_error(sandbox: Sandbox) -> None:
    host = sandbox.add_host()
    net = network(NET, [("10.90.0.0/24", "10.90.0.1")])
    gone = endpoint(NET, "gone", "/run/netns/does-not-exist", ["10.90.0.7/24"])
    empty = endpoint(NET, "empty", "", ["10.90.0.8/24"])
    r = run_agent(
        host.name,
        [
            {"op": "teardown_endpoint", "network": net, "endpoint": gone},
            {"op": "teardown_endpoint", "network": net, "endpoint": empty},
        ],
    )
    assert [s["result"] for s in r] == [[], []]


def test_teardown_removes_container_end_when_host_end_is_gone(sandbox: Sandbox) -> None:
    """A container veth left behind (its host end was renamed away) is removed by name."""
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    net = network(NET, [("10.90.0.0/24", "10.90.0.1")])
    ep = endpoint(NET, "cont1", c1.path, ["10.90.0.2/24"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert all(s["ok"] for s in r), r
    host.run("ip", "link", "set", ep["host_ifname"], "name", "renamed0")
    r = run_agent(host.name, [{"op": "teardown_endpoint", "network": net, "endpoint": ep}])
    assert r == [{"ok": True, "result": []}]
    assert set(c1.links()) == {"lo"}
    assert "renamed0" not in host.links()  # it went with its peer
