"""IPAM blocks in etcd (issue 16): claims, borrows, races between nodes, release, round trips.

Each test runs against the module's real etcd in its sandbox namespace (tests/ns/etcd_kit.py);
several EtcdStore clients with different ``node`` names stand for the nodes of a cluster. The
key layout is read back with curl from etcd's own gateway, not through netd.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import uuid
from collections.abc import Iterator
from functools import partial

import pytest
from etcd_kit import etcd, in_etcd_ns
from kit import endpoint, network
from netns_fixtures.etcd import EtcdServer
from test_store_etcd_ns import etcd_keys, race

from netd.errors import Conflict, InvalidInput
from netd.ipam.blocks import BlockAllocator
from netd.model import Endpoint, IPAddress, Network
from netd.store.etcd import EtcdStore

__all__ = ["etcd", "in_etcd_ns"]  # fixtures, imported for pytest


@pytest.fixture
def prefix() -> str:
    return f"/netd-test/{uuid.uuid4().hex}/"


@pytest.fixture
def nodes(in_etcd_ns: EtcdServer, prefix: str) -> Iterator[list[EtcdStore]]:
    """Three clients on one prefix, as nodes h0, h1, h2 would be."""
    stores = [EtcdStore([in_etcd_ns.url], prefix=prefix, node=f"h{i}") for i in range(3)]
    yield stores
    for s in stores:
        s.close()


def overlay(name: str, cidr: str) -> Network:
    return network(name, cidr, driver="overlay")


def at(net: Network, cid: str, address: str) -> Endpoint:
    prefixlen = net.subnets[0].subnet.prefixlen
    return endpoint(net, cid, ip=f"{address}/{prefixlen}")


def test_a_put_claims_its_block_and_the_keys_read_back(
    in_etcd_ns: EtcdServer, nodes: list[EtcdStore], prefix: str
) -> None:
    h0 = nodes[0]
    net = overlay("ov", "10.60.0.0/24")
    h0.create_network(net)
    h0.put_endpoint(at(net, "c1", "10.60.0.2"), {})
    h0.put_endpoint(at(net, "c2", "10.60.0.3"), {"10.60.0.0/26": ipaddress.ip_address("10.60.0.3")})
    keys = etcd_keys(in_etcd_ns, prefix)
    assert keys[f"{prefix}blocks/{net.id}/10.60.0.0/26"] == "h0"
    assert keys[f"{prefix}cursors/{net.id}/10.60.0.0/26"] == "10.60.0.3"
    assert [k for k in keys if "/blocks/" in k] == [f"{prefix}blocks/{net.id}/10.60.0.0/26"]
    assert nodes[1].list_blocks(net.id) == {"10.60.0.0/26": "h0"}
    assert h0.delete_endpoint(net.id, "c1", "eth0") and h0.delete_endpoint(net.id, "c2", "eth0")
    assert h0.list_blocks(net.id) == {"10.60.0.0/26": "h0"}, "an empty block stays claimed"
    h0.delete_network(net.id)
    assert etcd_keys(in_etcd_ns, prefix) == {f"{prefix}meta/created": "1"}, "blocks removed"


def test_bridge_networks_and_nodeless_stores_claim_no_block(
    in_etcd_ns: EtcdServer, nodes: list[EtcdStore], prefix: str
) -> None:
    bridge = network("local", "10.62.0.0/24")
    ov = overlay("ov", "10.63.0.0/24")
    nodes[0].create_network(bridge)
    nodes[0].create_network(ov)
    nodes[0].put_endpoint(at(bridge, "c1", "10.62.0.2"), {})
    nodeless = EtcdStore([in_etcd_ns.url], prefix=prefix)
    try:
        nodeless.put_endpoint(at(ov, "c1", "10.63.0.2"), {})
    finally:
        nodeless.close()
    assert not [k for k in etcd_keys(in_etcd_ns, prefix) if "/blocks/" in k]


def test_an_ipv6_address_claims_a_122(nodes: list[EtcdStore]) -> None:
    net = overlay("v6", "fd00:60::/64")
    nodes[0].create_network(net)
    nodes[0].put_endpoint(at(net, "c1", "fd00:60::1:45"), {})
    assert nodes[0].list_blocks(net.id) == {"fd00:60::1:40/122": "h0"}


@pytest.mark.parametrize("strict", [True, False], ids=["with-claims", "lenient"])
def test_two_nodes_racing_for_blocks_never_both_own_one(
    nodes: list[EtcdStore], strict: bool
) -> None:
    a, b = nodes[0], nodes[1]
    net = overlay("race", "10.64.0.0/20")  # 64 blocks of /26
    a.create_network(net)
    for i in range(20):
        base = ipaddress.ip_network("10.64.0.0/20").network_address + 64 * i
        block = f"{base}/26"
        claims = [block] if strict else []
        mine, theirs = at(net, f"a{i}", str(base + 5)), at(net, f"b{i}", str(base + 6))
        results = race(
            [
                partial(a.put_endpoint, mine, {}, claims=claims),
                partial(b.put_endpoint, theirs, {}, claims=claims),
            ]
        )
        owner = a.list_blocks(net.id)[block]
        assert owner in ("h0", "h1")
        if strict:
            assert sum(r is None for r in results) == 1, results
            loser = next(r for r in results if r is not None)
            assert isinstance(loser, Conflict) and loser.field == "block", loser
            assert f"claimed by node {owner!r} first" in str(loser)
        else:
            assert results == [None, None], "the loser's address is a borrow"
    assert a.stats.claims + b.stats.claims == 20
    if not strict:
        assert a.stats.borrows + b.stats.borrows == 20


def test_borrowing_from_another_nodes_block(nodes: list[EtcdStore]) -> None:
    a, b = nodes[0], nodes[1]
    net = overlay("borrow", "10.65.0.0/24")
    a.create_network(net)
    a.put_endpoint(at(net, "a1", "10.65.0.2"), {})
    b.put_endpoint(at(net, "b1", "10.65.0.3"), {})
    assert b.stats.borrows == 1 and b.stats.claims == 0
    assert b.list_blocks(net.id) == {"10.65.0.0/26": "h0"}
    assert b.list_allocations(net.id) == {"10.65.0.2": "a1/eth0", "10.65.0.3": "b1/eth0"}
    with pytest.raises(Conflict) as exc:  # the address key still decides
        b.put_endpoint(at(net, "b2", "10.65.0.2"), {})
    assert exc.value.field == "address"


def test_release_frees_only_a_nodes_empty_blocks(nodes: list[EtcdStore]) -> None:
    a, b = nodes[0], nodes[1]
    net = overlay("release", "10.66.0.0/24")
    a.create_network(net)
    a.put_endpoint(at(net, "a1", "10.66.0.2"), {})  # claims .0/26
    a.put_endpoint(at(net, "a2", "10.66.0.70"), {})  # claims .64/26
    b.put_endpoint(at(net, "b1", "10.66.0.130"), {})  # claims .128/26
    b.put_endpoint(at(net, "b2", "10.66.0.3"), {})  # borrows in a's .0/26
    assert a.release_blocks("h0") == [], "both blocks hold addresses"
    a.delete_endpoint(net.id, "a1", "eth0")
    a.delete_endpoint(net.id, "a2", "eth0")
    assert a.release_blocks("h0") == [(net.id, "10.66.0.64/26")]
    assert a.list_blocks(net.id) == {"10.66.0.0/26": "h0", "10.66.0.128/26": "h1"}
    # a freed block is anyone's again
    b.put_endpoint(at(net, "b3", "10.66.0.80"), {}, claims=["10.66.0.64/26"])
    assert a.list_blocks(net.id)["10.66.0.64/26"] == "h1"


def test_round_trips_per_put_and_delete(in_etcd_ns: EtcdServer, prefix: str) -> None:
    store = EtcdStore([in_etcd_ns.url], prefix=prefix, node="h0")
    cold = EtcdStore([in_etcd_ns.url], prefix=prefix, node="h1")
    try:
        net = overlay("rt", "10.67.0.0/24")
        store.create_network(net)

        def cost(call: partial[object], who: EtcdStore = store) -> int:
            before = who.stats.transactions
            call()
            return who.stats.transactions - before

        creating = dataclasses.replace(at(net, "c1", "10.67.0.2"), state="creating")
        assert cost(partial(store.put_endpoint, creating, {})) == 1, "new endpoint, new block"
        ready = dataclasses.replace(creating, state="ready")
        assert cost(partial(store.put_endpoint, ready, {})) == 1, "replace"
        second = at(net, "c2", "10.67.0.3")
        assert cost(partial(store.put_endpoint, second, {})) == 1, "own block"
        assert cost(partial(store.delete_endpoint, net.id, "c2", "eth0")) == 1
        # A client that has never seen the network reads it once.
        third = at(net, "c3", "10.67.0.4")
        assert cost(partial(cold.put_endpoint, third, {}), cold) == 2
        # One whose memory is stale (the endpoint changed elsewhere) pays one lost compare.
        assert cost(partial(cold.put_endpoint, ready, {}), cold) == 2
        assert cost(partial(store.put_endpoint, ready, {})) == 2
        assert store.stats.compare_failures == 1
    finally:
        store.close()
        cold.close()


def test_many_nodes_allocating_by_blocks_never_duplicate(
    in_etcd_ns: EtcdServer, prefix: str
) -> None:
    """Six nodes, each a thread with its own store and BlockAllocator, fill most of a /25 cut
    into /28 blocks: claims race, blocks run out, nodes borrow. Read back from etcd: every
    address once, each endpoint's address is its allocation key's."""
    count, per_node = 6, 18  # 108 of the 125 usable addresses
    net = overlay("many", "10.68.0.0/25")
    stores = [
        EtcdStore([in_etcd_ns.url], prefix=prefix, node=f"h{i}", block_prefixlen=28)
        for i in range(count)
    ]
    stores[0].create_network(net)
    errors: list[BaseException] = []

    def view(store: EtcdStore) -> tuple[dict[str, str], list[IPAddress]]:
        taken = [ipaddress.ip_address(a) for a in store.list_allocations(net.id)]
        return store.list_blocks(net.id), taken

    def run(i: int) -> None:
        store = stores[i]
        owners, taken = view(store)
        alloc = BlockAllocator(net, store.node or "", 28, taken=taken, owners=owners)
        try:
            for n in range(per_node):
                while True:
                    addrs, cursors = alloc.allocate()
                    ep = at(net, f"h{i}-{n}", str(addrs[0].ip))
                    try:
                        store.put_endpoint(ep, cursors, claims=alloc.claims(addrs))
                    except Conflict:
                        alloc.set_view(*view(store))  # another node was first: look again
                        continue
                    alloc.commit(addrs, cursors)
                    break
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    try:
        assert not errors, errors
        eps = stores[0].list_endpoints(net.id)
        held = [str(a.ip) for e in eps for a in e.addresses]
        assert len(held) == count * per_node and len(set(held)) == len(held)
        allocations = stores[0].list_allocations(net.id)
        assert allocations == {
            str(a.ip): f"{e.container_id}/{e.ifname}" for e in eps for a in e.addresses
        }
        assert not {"10.68.0.0", "10.68.0.1", "10.68.0.127"} & set(held)
        blocks = stores[0].list_blocks(net.id)
        assert len(blocks) == 8, "every /28 claimed before anyone borrowed"
        assert sum(s.stats.borrows for s in stores) > 0
    finally:
        for s in stores:
            s.close()


def test_bad_claims_change_nothing(
    in_etcd_ns: EtcdServer, nodes: list[EtcdStore], prefix: str
) -> None:
    net = overlay("bad", "10.69.0.0/24")
    nodes[0].create_network(net)
    before = etcd_keys(in_etcd_ns, prefix)
    with pytest.raises(InvalidInput) as exc:
        nodes[0].put_endpoint(at(net, "c1", "10.69.0.2"), {}, claims=["10.69.0.0/33"])
    assert exc.value.field == "claims"
    nodeless = EtcdStore([in_etcd_ns.url], prefix=prefix)
    try:
        with pytest.raises(InvalidInput, match="no node name"):
            nodeless.put_endpoint(at(net, "c1", "10.69.0.2"), {}, claims=["10.69.0.0/26"])
    finally:
        nodeless.close()
    assert etcd_keys(in_etcd_ns, prefix) == before
