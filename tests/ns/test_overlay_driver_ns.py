"""The overlay driver across three hosts: real VXLAN over a sandbox underlay, real packets.

Topology (all sandbox namespaces): an underlay namespace with a bridge ``ul0``, three host
namespaces wired to it (``up0``, 192.168.90.1-3/24, MTU 1500), a container namespace on each
host. The same overlay network record (VNI 4242, 10.70.0.0/24 and fd00:70::/64) is ensured on
every host by the driver running inside that host (tests/ns/overlay_agent.py), a container
attached on each, and each host told about the other hosts' containers with ``sync_remote``
— what the cluster sync does. Everything is read back with ``ip``/``bridge`` and proven with
pings; what crosses the underlay is captured there (tests/ns/vxlan_capture.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from bridge_agent import endpoint
from kit.records import net_id
from netns_fixtures import Namespace, Sandbox, wait_for
from overlay_agent import overlay_network, run_overlay_agent

HERE = os.path.dirname(os.path.abspath(__file__))
NET_ID = net_id("overlay-ns")
VNI = 4242
NET = overlay_network(NET_ID, [("10.70.0.0/24", "10.70.0.1"), ("fd00:70::/64", "fd00:70::1")], VNI)
VXLAN = "nx-" + NET_ID[:12]
BRIDGE = "nd-" + NET_ID[:12]


@dataclass
class Node:
    """One host of the overlay: its namespace, underlay address, container and endpoint."""

    host: Namespace
    address: str
    container: Namespace
    ip: str
    ip6: str
    ep: dict[str, Any]

    def agent(self, *steps: dict[str, Any]) -> list[Any]:
        """Run steps on this node's driver; the results, each step required to succeed."""
        results = run_overlay_agent(self.host.name, self.address, list(steps))
        for step, result in zip(steps, results, strict=True):
            assert result["ok"], (step["op"], result)
        return [r["result"] for r in results]

    def peer(self) -> list[dict[str, str]]:
        """This node's container as the other nodes' sync_remote gets it."""
        return [
            {"ip": ip, "mac": self.ep["mac"], "vtep": self.address} for ip in (self.ip, self.ip6)
        ]

    def sync(self, others: list[Node]) -> None:
        peers = [p for n in others for p in n.peer()]
        self.agent({"op": "sync_remote", "network": NET, "peers": peers})


def wire_host(underlay: Namespace, host: Namespace, index: int) -> str:
    """A veth from the underlay's bridge to ``host`` (``up0``); the host's underlay address."""
    port = f"ul-h{index}"
    underlay.run("ip", "link", "add", port, "type", "veth", "peer", "name", "up0", "netns",
                 host.name)  # fmt: skip
    underlay.run("ip", "link", "set", port, "master", "ul0", "up")
    address = f"192.168.90.{index}"
    host.run("ip", "addr", "add", f"{address}/24", "dev", "up0")
    host.run("ip", "link", "set", "up0", "up")
    return address


@pytest.fixture
def nodes(sandbox: Sandbox) -> Iterator[list[Node]]:
    """Three hosts on one underlay, the overlay ensured and a container attached on each, and
    each told about the others' containers; torn down afterwards (checked in the test that
    proves it)."""
    underlay = sandbox.add_ns("ul")
    underlay.run("ip", "link", "add", "ul0", "type", "bridge")
    underlay.run("ip", "link", "set", "ul0", "up")
    out: list[Node] = []
    for i in (1, 2, 3):
        host = sandbox.add_host(f"h{i}")
        address = wire_host(underlay, host, i)
        container = sandbox.add_ns(f"c{i}")
        ip, ip6 = f"10.70.0.1{i}", f"fd00:70::1{i}"
        asked = endpoint(NET_ID, f"ctr{i}", container.path, [f"{ip}/24", f"{ip6}/64"])
        node = Node(host, address, container, ip, ip6, asked)
        _, made = node.agent(
            {"op": "ensure_network", "network": NET},
            {"op": "setup_endpoint", "network": NET, "endpoint": asked},
        )
        assert made["mac"], made
        node.ep = made
        out.append(node)
    for node in out:
        node.sync([n for n in out if n is not node])
    yield out


class Capture:
    """The VXLAN frames crossing the underlay while it runs (vxlan_capture.py)."""

    def __init__(self, underlay: Namespace) -> None:
        self.proc = underlay.spawn(
            sys.executable, os.path.join(HERE, "vxlan_capture.py"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> list[dict[str, str]]:
        out, _ = self.proc.communicate(timeout=30)
        seen: list[dict[str, str]] = json.loads(out)
        return seen


def underlay_of(sandbox: Sandbox) -> Namespace:
    return next(ns for ns in sandbox.namespaces if ns.name.endswith("-ul"))


def test_containers_reach_each_other_across_hosts(nodes: list[Node]) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b:
                assert a.container.ping(b.ip, timeout=3), f"{a.ip} -> {b.ip}"
    a, b = nodes[0], nodes[1]
    assert a.container.ok("ping", "-6", "-n", "-q", "-c", "1", "-W", "3", b.ip6), "IPv6 a -> b"
    assert b.container.ok("ping", "-6", "-n", "-q", "-c", "1", "-W", "3", a.ip6), "IPv6 b -> a"


def test_arp_is_answered_on_the_node_and_nothing_is_flooded(
    sandbox: Sandbox, nodes: list[Node]
) -> None:
    a, b = nodes[0], nodes[1]
    for node in nodes:
        link = node.host.links()[VXLAN]
        data = link["linkinfo"]["info_data"]
        assert (data["id"], data["local"], data["port"]) == (VNI, node.address, 4789), data
        assert data["learning"] is False and data["proxy"] is True, data
        assert "group" not in data and "remote" not in data, data
        assert "nolearning" in node.host.run("ip", "-d", "link", "show", VXLAN)
        entries = json.loads(node.host.run("bridge", "-j", "fdb", "show", "dev", VXLAN))
        remote = sorted((e["mac"], e["dst"]) for e in entries if "dst" in e)
        others = [n for n in nodes if n is not node]
        assert remote == sorted((n.ep["mac"], n.address) for n in others), entries
        assert not any(e["mac"] == "00:00:00:00:00:00" for e in entries), entries
    for node in (a, b):
        node.container.run("ip", "neigh", "flush", "all")
    capture = Capture(underlay_of(sandbox))
    try:
        assert a.container.ping(b.ip, timeout=3)
        assert b.container.ping(a.ip, timeout=3)
        assert a.container.ok("ping", "-6", "-n", "-q", "-c", "1", "-W", "3", b.ip6)
    finally:
        seen = capture.stop()
    # The pings crossed the underlay, as VXLAN with our VNI, unicast to the containers' MACs...
    assert {f["vni"] for f in seen} == {VNI}, seen
    assert any(f["dst"] == b.ep["mac"] and f["src"] == a.ep["mac"] for f in seen), seen
    # ...while no ARP (0x0806) and no broadcast or multicast frame (NDP, MLD) ever left a node.
    assert not [f for f in seen if f["type"] == "0x0806"], seen
    assert not [f for f in seen if int(f["dst"][:2], 16) & 1], seen
    neigh = json.loads(a.container.run("ip", "-j", "neigh", "show", b.ip))
    assert neigh and neigh[0]["lladdr"] == b.ep["mac"], neigh


def test_mtu_leaves_room_for_the_encapsulation(nodes: list[Node]) -> None:
    a, b = nodes[0], nodes[1]
    for node in nodes:
        links = node.host.links()
        assert links["up0"]["mtu"] == 1500
        assert links[VXLAN]["mtu"] == links[BRIDGE]["mtu"] == 1450
        assert links[VXLAN]["master"] == BRIDGE
        assert links[node.ep["host_ifname"]]["mtu"] == 1450
        assert node.container.links()["eth0"]["mtu"] == 1450
    # 1422 + 8 ICMP + 20 IP = 1450: the largest unfragmented packet crosses; one more does not
    assert a.container.ok("ping", "-n", "-q", "-c", "1", "-W", "3", "-M", "do", "-s", "1422", b.ip)
    assert not a.container.ok("ping", "-n", "-q", "-c", "1", "-W", "1", "-M", "do", "-s", "1423",
                              b.ip)  # fmt: skip


def test_the_gateway_is_on_every_node(sandbox: Sandbox, nodes: list[Node]) -> None:
    capture = Capture(underlay_of(sandbox))
    try:
        for node in nodes:
            node.container.run("ip", "neigh", "flush", "all")
            assert node.container.ping("10.70.0.1"), node.host.name
            assert node.container.ok("ping", "-6", "-n", "-q", "-c", "1", "-W", "2", "fd00:70::1")
    finally:
        seen = capture.stop()
    assert seen == [], "the gateway was answered from another node"
    macs = {node.host.links()[BRIDGE]["address"] for node in nodes}
    assert len(macs) == 1, "the distributed gateway has one MAC on every node"


def test_a_peer_removed_by_sync_gets_no_more_traffic(nodes: list[Node]) -> None:
    a, b, c = nodes
    assert a.container.ping(b.ip) and a.container.ping(c.ip)
    a.sync([c])  # b left the network (or its node died)
    entries = json.loads(a.host.run("bridge", "-j", "fdb", "show", "dev", VXLAN))
    assert b.ep["mac"] not in {e["mac"] for e in entries if "dst" in e}, entries
    assert b.ip not in a.host.run("ip", "neigh", "show", "dev", VXLAN)
    wait_for("a no longer reaches b", lambda: not a.container.ping(b.ip, timeout=1), 10)
    assert a.container.ping(c.ip)
    a.sync([c])  # idempotent
    described = a.agent({"op": "describe", "network": NET, "endpoints": [a.ep]})[0]
    assert (described["vni"], described["mtu"], described["peers"]) == (str(VNI), 1450, 2)
    assert described["vxlan"]["vteps"] == [c.address] and described["vxlan"]["on_bridge"]
    a.sync([b, c])
    wait_for("a reaches b again", lambda: a.container.ping(b.ip, timeout=1), 10)


def test_a_deleted_vxlan_device_comes_back_with_its_peers(nodes: list[Node]) -> None:
    a, b, c = nodes
    peers = [p for n in (b, c) for p in n.peer()]
    a.agent(
        {"op": "sync_remote", "network": NET, "peers": peers},
        {"op": "ip", "args": ["link", "del", VXLAN]},
        {"op": "ensure_network", "network": NET},
    )
    entries = json.loads(a.host.run("bridge", "-j", "fdb", "show", "dev", VXLAN))
    assert {e["mac"] for e in entries if "dst" in e} == {b.ep["mac"], c.ep["mac"]}, entries
    assert a.host.links()[VXLAN]["master"] == BRIDGE
    wait_for("a reaches b again", lambda: a.container.ping(b.ip, timeout=1), 10)
    assert a.container.ping(c.ip)


def test_changes_only_sends_the_change_and_reads_whole_when_the_device_changed(
    nodes: list[Node],
) -> None:
    # What the cluster sync does between its whole reads: diff against the peers last
    # programmed, not the kernel's entries (no dump). An entry lost behind netd's back stays
    # lost until a whole sync; a device re-created behind its back (new ifindex) is read whole.
    a, b, c = nodes
    sync = {"op": "sync_remote", "network": NET}

    def fdb_macs() -> set[str]:
        entries = json.loads(a.host.run("bridge", "-j", "fdb", "show", "dev", VXLAN))
        return {e["mac"] for e in entries if "dst" in e}

    a.agent(
        {**sync, "peers": b.peer()},
        {"op": "ip", "args": ["neigh", "del", b.ip, "dev", VXLAN]},  # lost behind its back
        {**sync, "peers": [*b.peer(), *c.peer()], "changes_only": True},
    )
    assert fdb_macs() == {b.ep["mac"], c.ep["mac"]}
    neigh = a.host.run("ip", "neigh", "show", "dev", VXLAN)
    assert c.ip in neigh and b.ip not in neigh  # only the change was sent
    a.agent(
        {**sync, "peers": [*b.peer(), *c.peer()]},
        {**sync, "peers": c.peer(), "changes_only": True},
    )
    assert fdb_macs() == {c.ep["mac"]}
    assert b.ip not in a.host.run("ip", "neigh", "show", "dev", VXLAN)
    steps = [
        {**sync, "peers": c.peer()},
        {"op": "ip", "args": ["link", "del", VXLAN]},
        {"op": "ip", "args": ["link", "add", VXLAN, "type", "vxlan", "id", "7", "dstport", "4789"]},
        {**sync, "peers": [*b.peer(), *c.peer()], "changes_only": True},
    ]
    *done, last = run_overlay_agent(a.host.name, a.address, steps)
    assert all(r["ok"] for r in done), done
    # Not netd's device any more (a new ifindex, no tag): read whole and refused, whatever
    # the driver remembered; nothing was programmed on the stranger's device.
    assert not last["ok"] and "does not exist on this node" in json.dumps(last["error"]), last
    assert fdb_macs() == set()
    a.host.run("ip", "link", "del", VXLAN)
    a.agent({"op": "ensure_network", "network": NET}, {**sync, "peers": [*b.peer(), *c.peer()]})
    assert fdb_macs() == {b.ep["mac"], c.ep["mac"]}
    assert a.container.ping(b.ip) and a.container.ping(c.ip)


def test_ensure_again_keeps_the_device_and_its_entries(nodes: list[Node]) -> None:
    a = nodes[0]
    before = {name: link["ifindex"] for name, link in a.host.links().items()}
    fdb_before = a.host.run("bridge", "fdb", "show", "dev", VXLAN)
    a.agent({"op": "ensure_network", "network": NET}, {"op": "check_endpoint", "network": NET,
                                                       "endpoint": a.ep})  # fmt: skip
    after = {name: link["ifindex"] for name, link in a.host.links().items()}
    assert after == before, "ensure_network re-created a link"
    assert a.host.run("bridge", "fdb", "show", "dev", VXLAN) == fdb_before


def test_a_deleted_bridge_comes_back_with_its_ports(nodes: list[Node]) -> None:
    a, b = nodes[0], nodes[1]
    a.host.run("ip", "link", "del", BRIDGE)
    assert (
        a.agent(
            {"op": "ensure_network", "network": NET},
            {"op": "check_endpoint", "network": NET, "endpoint": a.ep},
        )[1]
        == []
    )
    links = a.host.links()
    assert links[VXLAN]["master"] == links[a.ep["host_ifname"]]["master"] == BRIDGE
    wait_for("a reaches b again", lambda: a.container.ping(b.ip, timeout=1), 10)


def test_check_endpoint_names_a_missing_vxlan_device(nodes: list[Node]) -> None:
    a = nodes[0]
    a.host.run("ip", "link", "del", VXLAN)
    [problems] = a.agent({"op": "check_endpoint", "network": NET, "endpoint": a.ep})
    assert problems == [f'VXLAN device "{VXLAN}" missing']


def test_teardown_leaves_no_link_behind(nodes: list[Node]) -> None:
    for node in nodes:
        inventory = node.agent({"op": "inventory"})[0]
        assert inventory[f"netd:vxlan:{NET_ID}"] == VXLAN
        assert inventory[f"netd:{NET_ID}"] == BRIDGE
        assert node.agent(
            {"op": "teardown_endpoint", "network": NET, "endpoint": node.ep},
            {"op": "teardown_network", "network": NET},
            {"op": "inventory"},
        ) == [[], [], {}]
        assert sorted(node.host.links()) == ["lo", "up0"]
        assert sorted(node.container.links()) == ["lo"]
    nodes[0].agent({"op": "teardown_network", "network": NET})  # again: nothing to do


def test_sync_before_the_network_is_plumbed_says_so(sandbox: Sandbox) -> None:
    underlay = sandbox.add_ns("ul")
    underlay.run("ip", "link", "add", "ul0", "type", "bridge")
    host = sandbox.add_host("h1")
    address = wire_host(underlay, host, 1)
    [result] = run_overlay_agent(host.name, address, [{"op": "sync_remote", "network": NET,
                                                       "peers": []}])  # fmt: skip
    assert not result["ok"]
    assert result["error"]["message"] == (
        f'programming remote peers of network "{NET["name"]}" on "{VXLAN}": the VXLAN device '
        "does not exist on this node"
    )


def test_a_node_address_no_interface_holds_is_refused(sandbox: Sandbox) -> None:
    host = sandbox.add_host("h1")
    [result, inventory] = run_overlay_agent(
        host.name, "192.168.91.1", [{"op": "ensure_network", "network": NET}, {"op": "inventory"}]
    )
    assert not result["ok"]
    assert result["error"]["type"] == "InvalidInput"
    assert "cluster.node_address '192.168.91.1'" in result["error"]["message"]
    assert inventory == {"ok": True, "result": {}}
    assert sorted(host.links()) == ["lo"]


def test_a_vni_taken_by_another_device_is_refused_and_nothing_is_left(sandbox: Sandbox) -> None:
    underlay = sandbox.add_ns("ul")
    underlay.run("ip", "link", "add", "ul0", "type", "bridge")
    host = sandbox.add_host("h1")
    address = wire_host(underlay, host, 1)
    host.run("ip", "link", "add", "theirs", "type", "vxlan", "id", str(VNI), "dstport", "4789")
    before = sorted(host.links())
    [result] = run_overlay_agent(host.name, address, [{"op": "ensure_network", "network": NET}])
    assert not result["ok"]
    assert result["error"]["message"] == (
        f'creating VXLAN device "{VXLAN}" (VNI {VNI}, local {address}): another VXLAN device '
        f"already uses VNI {VNI} on port 4789"
    )
    assert sorted(host.links()) == before == ["lo", "theirs", "up0"]


def test_a_failure_after_the_vxlan_device_leaves_nothing(sandbox: Sandbox) -> None:
    underlay = sandbox.add_ns("ul")
    underlay.run("ip", "link", "add", "ul0", "type", "bridge")
    host = sandbox.add_host("h1")
    address = wire_host(underlay, host, 1)
    [failed, inventory] = run_overlay_agent(
        host.name, address, [{"op": "ensure_network", "network": NET}, {"op": "inventory"}],
        faults="overlay.vxlan_ready=raise",
    )  # fmt: skip
    assert not failed["ok"] and failed["error"]["type"] == "InjectedFault", failed
    assert inventory == {"ok": True, "result": {}}
    assert sorted(host.links()) == ["lo", "up0"]
