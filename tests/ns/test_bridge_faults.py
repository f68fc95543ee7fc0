"""An injected failure at any step of setup_endpoint leaves nothing behind."""

from __future__ import annotations

import pytest
from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Sandbox

NET = "5" * 64
STEPS = [
    "netns_opened",
    "veth_created",
    "host_configured",
    "addresses_added",
    "links_up",
    "routes_added",
]


@pytest.mark.parametrize("step", STEPS)
def test_failure_at_step_leaves_nothing(sandbox: Sandbox, step: str) -> None:
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    net = network(NET, [("10.95.0.0/24", "10.95.0.1"), ("fd00:95::/64", "fd00:95::1")])
    ep = endpoint(NET, "cont1", c1.path, ["10.95.0.2/24", "fd00:95::2/64"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
        faults=f"bridge.{step}=raise",
    )
    assert r[0]["ok"], r
    assert r[1]["error"] == {"type": "InjectedFault", "message": f"injected fault at bridge.{step}"}
    assert set(host.links()) == {"lo", "nd-555555555555"}
    assert set(c1.links()) == {"lo"}
    assert c1.ip_json("route", "show") == []


def test_kernel_refusal_is_translated_and_rolled_back(sandbox: Sandbox) -> None:
    """An address the kernel refuses (IPv6 on a link with IPv6 disabled) undoes the veth."""
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    c1.run("sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
    net = network(NET, [("fd00:95::/64", "fd00:95::1")])
    ep = endpoint(NET, "cont1", c1.path, ["fd00:95::2/64"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert r[1]["error"]["type"] == "KernelError"
    assert r[1]["error"]["message"].startswith(
        f'creating veth "{ep["host_ifname"]}" for container cont1: adding address fd00:95::2/64'
    )
    assert set(host.links()) == {"lo", "nd-555555555555"}
    assert set(c1.links()) == {"lo"}


def test_existing_interface_in_container_is_left_alone(sandbox: Sandbox) -> None:
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    c1.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    net = network(NET, [("10.95.0.0/24", "10.95.0.1")])
    ep = endpoint(NET, "cont1", c1.path, ["10.95.0.2/24"])
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert r[1]["error"] == {
        "type": "KernelError",
        "message": f'creating veth "{ep["host_ifname"]}" for container cont1: File exists',
    }
    assert set(host.links()) == {"lo", "nd-555555555555"}
    assert set(c1.links()) == {"lo", "eth0", "other0"}
