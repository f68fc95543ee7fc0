"""The macvlan driver on real links: a sandbox host whose parent is a veth into a "LAN".

Topology of every test: namespace ``lan`` plays the upstream router (192.168.77.1, the
networks' gateway, on ``down0``); the sandbox ``host`` has the other end ``up0`` (its own
address 192.168.77.2) as the macvlan parent; containers are further namespaces. The driver runs
inside the host namespace (:mod:`vlan_agent`); everything is read back with ``ip``/``ping``.
"""

from __future__ import annotations

from typing import Any

import pytest
from netns_fixtures import Namespace, Sandbox
from vlan_agent import endpoint, network, ok, run_agent

NET = "a1" * 32
NET2 = "b2" * 32
SUBNET = [("192.168.77.0/24", "192.168.77.1")]


def lan_host(sandbox: Sandbox) -> tuple[Namespace, Namespace]:
    """(host, lan): the host's ``up0`` is a veth into the LAN router's ``down0``."""
    host, lan = sandbox.add_host(), sandbox.add_ns("lan")
    sandbox.wire(host, lan, "192.168.77.2/24", "192.168.77.1/24")
    return host, lan


def macvlan(net_id: str = NET, **kw: Any) -> dict[str, Any]:
    opts = kw.pop("options", {"parent": "up0"})
    return network("macvlan", net_id, kw.pop("subnets", SUBNET), options=opts, **kw)


def kernel_lacks(host: Namespace, kind: str) -> str:
    """Why this kernel cannot make ``kind`` links ("" if it can), asked inside ``host``."""
    (reason,) = ok(run_agent("macvlan", host.name, [{"op": "missing_link_kind", "kind": kind}]))
    return str(reason)


def test_containers_reach_the_lan_and_each_other_but_not_the_host(sandbox: Sandbox) -> None:
    host, lan = lan_host(sandbox)
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    before = set(host.links())
    net = macvlan()
    e1 = endpoint(NET, "c1", c1.path, ["192.168.77.10/24"])
    e2 = endpoint(NET, "c2", c2.path, ["192.168.77.11/24"], mac="02:42:c0:a8:4d:0b")
    results = ok(
        run_agent(
            "macvlan",
            host.name,
            [
                {"op": "ensure_network", "network": net},
                {"op": "setup_endpoint", "network": net, "endpoint": e1},
                {"op": "setup_endpoint", "network": net, "endpoint": e2},
                {"op": "inventory"},
                {"op": "network_tags", "network": net},
            ],
        )
    )
    plumbed1, plumbed2 = results[1], results[2]
    assert plumbed1["host_ifname"] == "" and plumbed1["host_mac"] is None
    assert results[3] == {} and results[4] == []  # the user's parent: netd owns nothing
    (cni,) = ok(run_agent("macvlan", host.name, [
        {"op": "cni_interfaces", "network": net, "endpoint": plumbed1}]))  # fmt: skip
    assert cni == [{"name": "eth0", "mac": c1.links()["eth0"]["address"], "sandbox": c1.path}]
    # Read back independently: a macvlan on up0, in bridge mode, with the asked MAC.
    link = c2.links()["eth0"]
    assert link["linkinfo"]["info_kind"] == "macvlan"
    assert link["linkinfo"]["info_data"]["mode"] == "bridge"
    assert link["address"] == "02:42:c0:a8:4d:0b" == plumbed2["mac"]
    assert c1.addresses("eth0") == ["192.168.77.10/24"]
    routes = c1.ip_json("route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in routes] == [("192.168.77.1", "eth0")]
    # The gateway is the LAN's router, never an address of the host.
    assert "192.168.77.1/24" not in host.addresses("up0")
    assert set(host.links()) == before  # nothing new in the host
    assert c1.ping("192.168.77.1") and lan.ping("192.168.77.10")
    assert c1.ping("192.168.77.11") and c2.ping("192.168.77.10")
    # A kernel rule (documented in docs/drivers.md): frames between a lower device and its own
    # macvlans never cross inside the host, so the host cannot reach its containers.
    assert not host.ping("192.168.77.10", timeout=1)
    assert not c1.ping("192.168.77.2", timeout=1)
    ok(
        run_agent(
            "macvlan",
            host.name,
            [
                {"op": "teardown_endpoint", "network": net, "endpoint": e1},
                {"op": "teardown_endpoint", "network": net, "endpoint": e2},
                {"op": "teardown_network", "network": net},
            ],
        )
    )
    assert set(c1.links()) == {"lo"} and set(c2.links()) == {"lo"}
    assert set(host.links()) == before
    assert host.links()["up0"]["operstate"] == "UP"  # the user's parent is left alone


def test_a_missing_parent_is_refused_naming_the_option_and_changes_nothing(
    sandbox: Sandbox,
) -> None:
    host, _lan = lan_host(sandbox)
    before = host.links()
    net = macvlan(options={"parent": "eth9"})
    (r,) = run_agent("macvlan", host.name, [{"op": "ensure_network", "network": net}])
    assert r["error"] == {
        "type": "InvalidInput",
        "message": "invalid options.parent 'eth9': no such link in the daemon's network namespace",
    }
    assert host.links().keys() == before.keys()


def test_a_parent_that_is_not_ethernet_is_refused_at_create(sandbox: Sandbox) -> None:
    # The kernel would refuse only later (the first attach: EINVAL; a VLAN on lo: EOPNOTSUPP,
    # a 500); the refusal names the option and changes nothing.
    host, _lan = lan_host(sandbox)
    before = host.links()
    for parent in ("lo", "lo.5"):
        net = macvlan(options={"parent": parent})
        (r,) = run_agent("macvlan", host.name, [{"op": "ensure_network", "network": net}])
        assert r["error"] == {
            "type": "InvalidInput",
            "message": f"invalid options.parent '{parent}': cannot use it: \"lo\" is not an "
            "Ethernet link (loopback or another link type), and only an Ethernet link can carry "
            "the containers' links",
        }, r
    assert host.links().keys() == before.keys()


def test_parent_with_vlan_id_is_a_sub_interface_netd_owns(sandbox: Sandbox) -> None:
    host, lan = lan_host(sandbox)
    net = macvlan(options={"parent": "up0.10"})
    reason = kernel_lacks(host, "vlan")
    if reason:
        # The refusal names the option, the value and the missing feature, and changes nothing.
        before = set(host.links())
        (r,) = run_agent("macvlan", host.name, [{"op": "ensure_network", "network": net}])
        refusal = f"invalid options.parent 'up0.10': cannot create it: {reason}"
        assert r["error"]["message"] == refusal
        assert set(host.links()) == before
        pytest.skip(f"802.1Q sub-interfaces not testable: {reason}")
    lan.run("ip", "link", "add", "link", "down0", "name", "down0.10", "type", "vlan", "id", "10")
    lan.run("ip", "addr", "add", "192.168.77.1/24", "dev", "down0.10")
    lan.run("ip", "addr", "del", "192.168.77.1/24", "dev", "down0")
    lan.run("ip", "link", "set", "down0.10", "up")
    c1 = sandbox.add_ns("c1")
    e1 = endpoint(NET, "c1", c1.path, ["192.168.77.10/24"])
    results = ok(run_agent("macvlan", host.name, [
        {"op": "ensure_network", "network": net},
        {"op": "setup_endpoint", "network": net, "endpoint": e1},
        {"op": "inventory"},
    ]))  # fmt: skip
    assert results[2] == {"netd:vlan:macvlan:up0.10": "up0.10"}
    assert host.links()["up0.10"]["linkinfo"]["info_data"]["id"] == 10
    assert c1.ping("192.168.77.1")
    ok(run_agent("macvlan", host.name, [
        {"op": "teardown_endpoint", "network": net, "endpoint": e1},
        {"op": "teardown_network", "network": net},
    ]))  # fmt: skip
    assert "up0.10" not in host.links()


def test_no_parent_is_an_internal_network_on_a_parent_netd_owns(sandbox: Sandbox) -> None:
    host, _lan = lan_host(sandbox)
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    before = set(host.links())
    net = macvlan(options={}, subnets=[("10.55.0.0/24", "10.55.0.1")])
    e1 = endpoint(NET, "c1", c1.path, ["10.55.0.10/24"])
    e2 = endpoint(NET, "c2", c2.path, ["10.55.0.11/24"])
    results = ok(run_agent("macvlan", host.name, [
        {"op": "ensure_network", "network": net},
        {"op": "setup_endpoint", "network": net, "endpoint": e1},
        {"op": "setup_endpoint", "network": net, "endpoint": e2},
        {"op": "inventory"},
        {"op": "network_tags", "network": net},
    ]))  # fmt: skip
    parent = "nm-" + NET[:12]
    tag = f"netd:parent:macvlan:{NET}"
    assert results[3] == {tag: parent} and results[4] == [tag]
    link = host.links()[parent]
    assert link["ifalias"] == tag
    # A dummy where the kernel has them, else a veth pair going nowhere (docs/drivers.md).
    kind = "veth" if kernel_lacks(host, "dummy") else "dummy"
    assert link["linkinfo"]["info_kind"] == kind
    assert host.addresses(parent) == []
    assert c1.ip_json("route", "show", "default") == []  # nothing upstream
    assert c1.ping("10.55.0.11") and c2.ping("10.55.0.10")
    ok(run_agent("macvlan", host.name, [
        {"op": "teardown_endpoint", "network": net, "endpoint": e1},
        {"op": "teardown_endpoint", "network": net, "endpoint": e2},
        {"op": "teardown_network", "network": net},
        {"op": "inventory"},
    ]))  # fmt: skip
    assert set(host.links()) == before


def test_two_networks_share_one_parent(sandbox: Sandbox) -> None:
    host, lan = lan_host(sandbox)
    lan.run("ip", "addr", "add", "192.168.78.1/24", "dev", "down0")
    lan.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    n1 = macvlan(NET)
    n2 = macvlan(NET2, subnets=[("192.168.78.0/24", "192.168.78.1")])
    e1 = endpoint(NET, "c1", c1.path, ["192.168.77.10/24"])
    e2 = endpoint(NET2, "c2", c2.path, ["192.168.78.10/24"])
    ok(run_agent("macvlan", host.name, [
        {"op": "ensure_network", "network": n1},
        {"op": "ensure_network", "network": n2},
        {"op": "setup_endpoint", "network": n1, "endpoint": e1},
        {"op": "setup_endpoint", "network": n2, "endpoint": e2},
    ]))  # fmt: skip
    assert c1.ping("192.168.77.1") and c2.ping("192.168.78.1")
    assert c1.ping("192.168.78.10")  # routed by the LAN's router, as on a real LAN


def test_a_failed_setup_leaves_nothing_in_the_container(sandbox: Sandbox) -> None:
    host, _lan = lan_host(sandbox)
    c1 = sandbox.add_ns("c1")
    net = macvlan()
    e1 = endpoint(NET, "c1", c1.path, ["192.168.77.10/24"])
    steps = [
        {"op": "ensure_network", "network": net},
        {"op": "setup_endpoint", "network": net, "endpoint": e1},
    ]
    for point in ("macvlan.link_created", "macvlan.addresses_added", "macvlan.routes_added"):
        r = run_agent("macvlan", host.name, steps, faults=f"{point}=raise")
        assert r[0]["ok"] and r[1]["error"]["type"] == "InjectedFault", r
        assert set(c1.links()) == {"lo"}, point
    # An address the kernel refuses (already on another link in the namespace): rolled back,
    # and the error says what was being created.
    c1.run("ip", "link", "add", "other", "type", "veth", "peer", "name", "otherp")
    r = run_agent("macvlan", host.name, [*steps, {"op": "setup_endpoint", "network": net,
                  "endpoint": endpoint(NET, "c1", c1.path, ["192.168.77.10/24"],
                                       ifname="other")}])  # fmt: skip
    assert r[2]["error"]["type"] == "KernelError"
    assert r[2]["error"]["message"].startswith('creating macvlan link "other" for container c1: ')
    assert set(c1.links()) == {"lo", "eth0", "other", "otherp"}


def test_check_finds_a_deleted_link_and_a_deleted_parent(sandbox: Sandbox) -> None:
    host, _lan = lan_host(sandbox)
    c1 = sandbox.add_ns("c1")
    net = macvlan()
    e1 = endpoint(NET, "c1", c1.path, ["192.168.77.10/24"])
    check = {"op": "check_endpoint", "network": net, "endpoint": e1}
    healthy = ok(run_agent("macvlan", host.name, [
        {"op": "ensure_network", "network": net},
        {"op": "setup_endpoint", "network": net, "endpoint": e1},
        check,
    ]))  # fmt: skip
    assert healthy[2] == []
    c1.run("ip", "route", "del", "default")
    (problems,) = ok(run_agent("macvlan", host.name, [check]))
    assert problems == [f"default route via 192.168.77.1 missing on eth0 in {c1.path}"]
    host.run("ip", "link", "del", "up0")  # takes the container's macvlan along
    (problems,) = ok(run_agent("macvlan", host.name, [check]))
    assert problems == ['parent link "up0" missing', f"interface eth0 in {c1.path} missing"]


def test_reconcile_primitives_rebuild_a_deleted_internal_parent(sandbox: Sandbox) -> None:
    """What reconcile does with the driver: missing tag → ensure_network, then re-plumb the
    endpoints check_endpoint reports; an orphan tag → remove_object."""
    host, _lan = lan_host(sandbox)
    c1 = sandbox.add_ns("c1")
    net = macvlan(options={}, subnets=[("10.55.0.0/24", "10.55.0.1")])
    e1 = endpoint(NET, "c1", c1.path, ["10.55.0.10/24"])
    parent = "nm-" + NET[:12]
    ok(run_agent("macvlan", host.name, [
        {"op": "ensure_network", "network": net},
        {"op": "setup_endpoint", "network": net, "endpoint": e1},
    ]))  # fmt: skip
    host.run("ip", "link", "del", parent)
    results = ok(run_agent("macvlan", host.name, [
        {"op": "inventory"},
        {"op": "check_endpoint", "network": net, "endpoint": e1},
        {"op": "ensure_network", "network": net},
        {"op": "setup_endpoint", "network": net, "endpoint": e1},
        {"op": "check_endpoint", "network": net, "endpoint": e1},
        {"op": "remove_object", "ifname": "up0"},  # not netd's: refused
        {"op": "remove_object", "ifname": parent},  # as for an orphan
    ]))  # fmt: skip
    assert results[0] == {}
    assert results[1] == [f'parent link "{parent}" missing', f"interface eth0 in {c1.path} missing"]
    assert results[4] == [] and results[5] is False and results[6] is True
    assert "up0" in host.links() and parent not in host.links()


def test_ipvlan(sandbox: Sandbox) -> None:
    host, _lan = lan_host(sandbox)
    net = network("ipvlan", NET, SUBNET, options={"parent": "up0", "ipvlan_mode": "l2"})
    reason = kernel_lacks(host, "ipvlan")
    if reason:
        # Creating the network is the one-line error naming the feature; nothing changes.
        before = set(host.links())
        (r,) = run_agent("ipvlan", host.name, [{"op": "ensure_network", "network": net}])
        assert r["error"]["message"] == f"invalid driver 'ipvlan': {reason}"
        assert set(host.links()) == before
        pytest.skip(f"ipvlan not testable: {reason}")
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    e1 = endpoint(NET, "c1", c1.path, ["192.168.77.10/24"])
    e2 = endpoint(NET, "c2", c2.path, ["192.168.77.11/24"])
    results = ok(run_agent("ipvlan", host.name, [
        {"op": "ensure_network", "network": net},
        {"op": "setup_endpoint", "network": net, "endpoint": e1},
        {"op": "setup_endpoint", "network": net, "endpoint": e2},
    ]))  # fmt: skip
    assert results[1]["mac"] == host.links()["up0"]["address"]  # ipvlan shares the parent's
    assert c1.ping("192.168.77.1") and c1.ping("192.168.77.11")
    ok(run_agent("ipvlan", host.name, [
        {"op": "teardown_endpoint", "network": net, "endpoint": e1},
        {"op": "teardown_endpoint", "network": net, "endpoint": e2},
    ]))  # fmt: skip
    assert set(c1.links()) == {"lo"}
