"""The cluster's store layer against a real etcd: ClusterStore, node leases, the cluster view.

- ClusterStore puts global (overlay) networks and their endpoints in etcd, with the node that
  runs each endpoint, and local ones in SQLite; a second node sees the global ones only; the
  local copy serves start-up while etcd is paused, and every call is bounded meanwhile.
- NodeRegistry: a registered node is ready; without heartbeats it is down after its TTL (the
  lease expires in etcd, nobody has to notice); removing a ready node is refused without
  force; removing a down node frees its endpoints, addresses and blocks and nothing else.
- read_view reads networks, endpoints, live nodes and blocks at one revision.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_kit import etcd, in_etcd_ns
from kit import endpoint, net_id, network
from netns_fixtures import wait_for
from netns_fixtures.etcd import EtcdServer

from netd.cluster.nodes import NodeRegistry
from netd.cluster.store import ClusterStore
from netd.cluster.view import read_view
from netd.errors import Conflict, NotFound, StoreError
from netd.model import Network
from netd.store import etcd_txn as t
from netd.store.etcd import EtcdStore
from netd.store.sqlite import SqliteStore

__all__ = ["etcd", "in_etcd_ns"]  # fixtures, imported for pytest

BOUND = 10.0


def is_global(net: Network) -> bool:
    return net.driver == "overlay"


@pytest.fixture
def prefix() -> str:
    return f"/netd-test/{uuid.uuid4().hex}/"


def node_store(server: EtcdServer, prefix: str, tmp: Path, name: str) -> ClusterStore:
    etcd = EtcdStore([server.url], prefix=prefix, request_timeout=2.0, deadline=4.0)
    return ClusterStore(SqliteStore(tmp / f"{name}.db"), etcd, name, is_global)


@pytest.fixture
def nodes(
    in_etcd_ns: EtcdServer, prefix: str, tmp_path: Path
) -> Iterator[tuple[ClusterStore, ClusterStore]]:
    h1 = node_store(in_etcd_ns, prefix, tmp_path, "h1")
    h2 = node_store(in_etcd_ns, prefix, tmp_path, "h2")
    yield h1, h2
    h1.close()
    h2.close()


OVERLAY = network("ov1", "10.60.0.0/16", driver="overlay", options={"vni": "4096"})
BRIDGE = network("br1", "10.61.0.0/24")


def test_global_networks_live_in_etcd_local_ones_on_the_node(
    nodes: tuple[ClusterStore, ClusterStore],
) -> None:
    h1, h2 = nodes
    h1.list_networks()
    h2.list_networks()
    h1.create_network(OVERLAY)
    h1.create_network(BRIDGE)
    assert {n.name for n in h1.list_networks()} == {"ov1", "br1"}
    assert {n.name for n in h2.list_networks()} == {"ov1"}  # the bridge is h1's alone
    # The same name or VNI for another overlay is refused by etcd, whichever node asks.
    with pytest.raises(Conflict) as err:
        h2.create_network(network("ov1", "10.62.0.0/16", driver="overlay",
                                  options={"vni": "4097"}, id=net_id("other")))  # fmt: skip
    assert err.value.field == "name"
    with pytest.raises(Conflict) as err:
        h2.create_network(network("ov2", "10.62.0.0/16", driver="overlay",
                                  options={"vni": "4096"}))  # fmt: skip
    assert err.value.field == "options.vni"

    mine = endpoint(OVERLAY, "c1", ip="10.60.0.2/16", node="h1")
    theirs = endpoint(OVERLAY, "c2", ip="10.60.0.3/16", node="h2")
    h1.put_endpoint(mine, {})
    h2.put_endpoint(theirs, {})
    # Each node lists the endpoints it runs; the other node's come from the view.
    assert [e.container_id for e in h1.list_endpoints(OVERLAY.id)] == ["c1"]
    assert [e.container_id for e in h2.list_endpoints(OVERLAY.id)] == ["c2"]
    # An address is unique across nodes: etcd refuses h2 taking h1's.
    with pytest.raises(Conflict) as err:
        h2.put_endpoint(endpoint(OVERLAY, "c3", ip="10.60.0.2/16", node="h2"), {})
    assert err.value.field == "address"
    # The local copy holds this node's endpoints of the global network.
    assert [e.container_id for e in h1.local.list_endpoints(OVERLAY.id)] == ["c1"]

    view = read_view(h1.etcd)
    assert set(view.networks) == {OVERLAY.id}
    assert {e.container_id: e.node for e in view.endpoints[OVERLAY.id]} == {"c1": "h1", "c2": "h2"}

    # A network with endpoints anywhere cannot be removed, from any node.
    with pytest.raises(Conflict):
        h1.delete_network(OVERLAY.id)
    h1.delete_endpoint(OVERLAY.id, "c1", "eth0")
    h2.delete_endpoint(OVERLAY.id, "c2", "eth0")
    h2.list_networks()
    h2.delete_network(OVERLAY.id)
    assert [n.name for n in h1.list_networks()] == ["br1"]  # h1's stale copy is dropped
    assert [n.name for n in h1.local.list_networks()] == ["br1"]


def test_local_copy_serves_start_up_while_etcd_is_paused(
    nodes: tuple[ClusterStore, ClusterStore], in_etcd_ns: EtcdServer
) -> None:
    h1, _ = nodes
    h1.list_networks()
    h1.create_network(OVERLAY)
    h1.put_endpoint(endpoint(OVERLAY, "c1", ip="10.60.0.2/16", node="h1"), {})
    in_etcd_ns.pause()
    try:
        start = time.monotonic()
        names = [n.name for n in h1.list_networks()]
        eps = h1.list_endpoints(OVERLAY.id)
        assert names == ["ov1"] and [e.container_id for e in eps] == ["c1"]
        with pytest.raises(StoreError) as err:
            h1.put_endpoint(endpoint(OVERLAY, "c2", ip="10.60.0.3/16", node="h1"), {})
        assert "etcd" in str(err.value)
        assert time.monotonic() - start < 3 * BOUND  # three calls, each bounded
    finally:
        in_etcd_ns.resume()
    h1.put_endpoint(endpoint(OVERLAY, "c2", ip="10.60.0.3/16", node="h1"), {})
    assert {e.container_id for e in h1.list_endpoints(OVERLAY.id)} == {"c1", "c2"}


def test_an_attach_writes_etcd_once_ahead_and_an_interrupted_one_is_undone_at_start(
    nodes: tuple[ClusterStore, ClusterStore], in_etcd_ns: EtcdServer, prefix: str, tmp_path: Path
) -> None:
    h1, h2 = nodes
    h1.list_networks()
    h1.create_network(OVERLAY)
    h2.list_networks()
    mac = "02:00:00:00:00:01"
    c1 = endpoint(OVERLAY, "c1", ip="10.60.0.2/16", node="h1", state="creating", mac=mac)
    before = h1.etcd.stats.transactions
    h1.put_endpoint(c1, {})  # what Endpoints._reserve does; the kernel work would run now
    h1.settle_all()
    assert h1.etcd.stats.transactions - before == 1
    # etcd has it already as it will be served (other nodes program forwarding to its MAC);
    # the local copy, this node's word on what it finished, says "creating".
    (served,) = read_view(h1.etcd).endpoints[OVERLAY.id]
    assert (served.state, served.mac) == ("ready", mac)
    assert [e.state for e in h1.local.list_endpoints(OVERLAY.id)] == ["creating"]
    before = h1.etcd.stats.transactions
    h1.put_endpoint(dataclasses.replace(c1, state="ready"), {})
    h1.settle_all()
    assert h1.etcd.stats.transactions == before  # one etcd write for the whole attach
    assert [e.state for e in h1.local.list_endpoints(OVERLAY.id)] == ["ready"]

    # A record the driver changed after all follows to etcd (a second, background write).
    c2 = endpoint(OVERLAY, "c2", ip="10.60.0.3/16", node="h1", state="creating", mac=mac)
    h1.put_endpoint(c2, {})
    h1.put_endpoint(dataclasses.replace(c2, state="ready", mac="02:00:00:00:00:02"), {})
    h1.settle_all()
    found = {e.container_id: e.mac for e in read_view(h1.etcd).endpoints[OVERLAY.id]}
    assert found == {"c1": mac, "c2": "02:00:00:00:00:02"}

    # etcd refusing the address (h1's) fails the attach at its "ready", after the kernel work
    # (which the caller then undoes), and leaves nothing of h2's.
    taken = endpoint(OVERLAY, "c9", ip="10.60.0.2/16", node="h2", state="creating")
    h2.put_endpoint(taken, {})
    with pytest.raises(Conflict) as err:
        h2.put_endpoint(dataclasses.replace(taken, state="ready"), {})
    assert err.value.field == "address"
    h2.delete_endpoint(OVERLAY.id, "c9", "eth0")
    assert h2.local.list_endpoints(OVERLAY.id) == []

    # The daemon stops between the etcd write and the end of the kernel work: at the next
    # start the copy's "creating" wins over etcd's "ready", and start-up undoes the attach.
    c3 = endpoint(OVERLAY, "c3", ip="10.60.0.4/16", node="h1", state="creating")
    h1.put_endpoint(c3, {})
    h1.settle_all()
    again = node_store(in_etcd_ns, prefix, tmp_path, "h1")  # a new daemon on h1's files
    try:
        again.list_networks()
        states = {e.container_id: e.state for e in again.list_endpoints(OVERLAY.id)}
        assert states == {"c1": "ready", "c2": "ready", "c3": "creating"}
    finally:
        again.close()


def test_node_lease_ready_down_and_remove(in_etcd_ns: EtcdServer, prefix: str) -> None:
    a = EtcdStore([in_etcd_ns.url], prefix=prefix)
    b = EtcdStore([in_etcd_ns.url], prefix=prefix)
    h1 = NodeRegistry(a, "h1", "10.99.0.1", ttl=2)
    h2 = NodeRegistry(b, "h2", "10.99.0.2", ttl=2)
    try:
        h1.register()
        h2.register()
        h2.start()  # h2 heartbeats; h1 never does: its lease runs out
        states = {n.name: n.state for n in h1.list()}
        assert states == {"h1": "ready", "h2": "ready"}
        with pytest.raises(Conflict) as err:
            h2.remove("h1")
        assert err.value.field == "name" and "ready" in err.value.message
        with pytest.raises(NotFound):
            h2.remove("h9")
        # h1 holds an endpoint (two addresses) and a block; h2 one endpoint and a block.
        net = network("ov1", ["10.60.0.0/16", "fd00:60::/64"], driver="overlay",
                      options={"vni": "4096"})  # fmt: skip
        a.create_network(net)
        a.put_endpoint(endpoint(net, "c1", node="h1"), {})
        b.put_endpoint(endpoint(net, "c2", host=3, node="h2"), {})
        a.commit("claim", [], [t.put(a.key(f"blocks/{net.id}/10.60.0.0/26"), "h1")])
        b.commit("claim", [], [t.put(b.key(f"blocks/{net.id}/10.60.0.64/26"), "h2")])
        wait_for("h1 down", lambda: {n.name: n.state for n in h2.list()}["h1"] == "down", 15)
        assert {n.name: n.state for n in h2.list()}["h2"] == "ready"
        shown = {n.name: n for n in h2.list()}["h1"]
        assert shown.endpoints == 1 and shown.blocks == ["10.60.0.0/26"]
        removed = h2.remove("h1")
        assert removed.name == "h1"
        assert [n.name for n in h2.list()] == ["h2"]
        view = read_view(b)
        assert [e.container_id for e in view.endpoints[net.id]] == ["c2"]
        assert view.blocks == {net.id: {"10.60.0.64/26": "h2"}}
        assert set(view.alive) == {"h2"}
        # h1's addresses are free again: another endpoint may take them.
        b.put_endpoint(endpoint(net, "c3", node="h2"), {})
        # A node whose lease expired re-joins on its next heartbeat.
        h1.beat()
        assert {n.name: n.state for n in h2.list()}["h1"] == "ready"
    finally:
        h2.stop()
        a.close()
        b.close()
