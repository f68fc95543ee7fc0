"""An internal network gives its containers no default route."""

from __future__ import annotations

from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Sandbox

NET = "3" * 64


def test_internal_network_has_no_default_route(sandbox: Sandbox) -> None:
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    net = network(
        NET, [("10.93.0.0/24", "10.93.0.1"), ("fd00:93::/64", "fd00:93::1")], internal=True
    )
    ep = endpoint(NET, "cont1", c1.path, ["10.93.0.2/24", "fd00:93::2/64"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
            {"op": "check_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert all(s["ok"] for s in r), r
    assert r[2]["result"] == []
    assert c1.ip_json("route", "show", "default") == []
    assert c1.ip_json("-6", "route", "show", "default") == []
    assert c1.ping("10.93.0.1")  # the gateway address (DNS lives there) is still reachable
