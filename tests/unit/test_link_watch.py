"""The link-event watcher's pure parts: RTM_DELLINK parsing and which networks to repair."""

from __future__ import annotations

import asyncio
import struct

from kit import endpoint, network

from netd.drivers.bridge import BridgeDriver
from netd.link_watch import (
    IFLA_IFALIAS,
    IFLA_IFNAME,
    RTM_DELLINK,
    DeletedLink,
    LinkWatcher,
    deleted_links,
    networks_to_repair,
)
from netd.model import Endpoint, Network
from netd.names import bridge_tag, endpoint_tag, parent_tag, vlan_parent_tag
from netd.reconcile.plan import Expected, expected_from

RTM_NEWLINK = 16


def nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def message(kind: int, ifname: str, alias: str | None = None) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, 7, 0, 0) + nla(IFLA_IFNAME, ifname.encode() + b"\0")
    if alias is not None:
        body += nla(IFLA_IFALIAS, alias.encode() + b"\0")
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


NET = network("web", "10.1.0.0/24", id="ab" * 32)
OTHER = network("db", [], id="cd" * 32)
EP = endpoint(NET, "c1", ip=(), host_ifname="nv1")


def want(networks: list[Network], endpoints: list[Endpoint]) -> Expected:
    """What the bridge driver expects in the kernel for these records."""
    return expected_from(networks, endpoints, lambda net: BridgeDriver())


def test_parses_only_dellink_with_name_and_alias() -> None:
    data = (
        message(RTM_NEWLINK, "nv1", "netd:x")
        + message(RTM_DELLINK, "nd-abab", bridge_tag(NET.id))
        + message(RTM_DELLINK, "eth9")
    )
    assert deleted_links(data) == [
        DeletedLink("nd-abab", bridge_tag(NET.id)),
        DeletedLink("eth9", ""),
    ]
    assert deleted_links(data[:-3]) == [DeletedLink("nd-abab", bridge_tag(NET.id))]  # cut short
    assert deleted_links(b"") == []


def test_only_links_the_records_expect_are_repaired() -> None:
    veth = endpoint_tag(NET.id, "c1", "eth0")
    assert networks_to_repair([bridge_tag(NET.id)], [NET, OTHER], want([NET, OTHER], [EP])) == {
        NET.id
    }
    assert networks_to_repair([veth], [NET, OTHER], want([NET, OTHER], [EP])) == {NET.id}
    # Detached (record gone) or network removed: netd deleted it itself.
    assert networks_to_repair([veth], [NET, OTHER], want([NET, OTHER], [])) == set()
    assert networks_to_repair([bridge_tag(NET.id)], [OTHER], want([OTHER], [])) == set()
    assert networks_to_repair(["netd:someone-elses"], [NET], want([NET], [EP])) == set()


def test_a_shared_vlan_parent_repairs_the_networks_that_expect_it() -> None:
    # A VLAN parent's tag names no network (several share it): the networks whose records
    # expect the tag are repaired, and only they.
    vlan = vlan_parent_tag("macvlan", "eth0.10")
    internal = parent_tag("macvlan", NET.id)
    expected = Expected(
        {NET.id: frozenset({vlan}), OTHER.id: frozenset({vlan}), "ef" * 32: frozenset()},
        frozenset(),
    )
    third = network("third", [], id="ef" * 32)
    assert networks_to_repair([vlan], [NET, OTHER, third], expected) == {NET.id, OTHER.id}
    expected = Expected({NET.id: frozenset({internal}), OTHER.id: frozenset()}, frozenset())
    assert networks_to_repair([internal], [NET, OTHER], expected) == {NET.id}


def test_watcher_debounces_and_reconciles_the_networks() -> None:
    calls: list[set[str] | None] = []

    async def reconcile(ids: set[str] | None) -> None:
        calls.append(ids)

    async def scenario() -> None:
        state = ([NET, OTHER], want([NET, OTHER], [EP]))
        watcher = LinkWatcher(reconcile, lambda: state, debounce=0.01, gap=0.01)
        veth = endpoint_tag(NET.id, "c1", "eth0")
        watcher._tags = {bridge_tag(NET.id): "nd-nosuchlink0", veth: "nv-nosuchlink0"}
        await watcher._run()
        watcher._full = True
        await watcher._run()
        watcher._tags = {"netd:gone": "nv-nosuchlink1"}
        await watcher._run()
        # Deleted, then made again under its name before the debounce ended (a DEL and an ADD
        # of the same container): nothing to repair. "lo" stands for a link that exists.
        watcher._tags = {veth: "lo"}
        await watcher._run()
        assert watcher.passes == 2

    asyncio.run(scenario())
    assert calls == [{NET.id}, None]
