"""The cluster sync's IPsec step (pure wiring, fakes around it): what it hands the manager,
and that an encrypted network's peers wait until IPsec is in place."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from ipaddress import IPv4Address
from types import SimpleNamespace

from netd.cluster.sync import ClusterSync
from netd.cluster.view import ClusterView
from netd.errors import KernelError
from netd.model import Network


class FakeManager:
    def __init__(self, fail: bool = False, idle: bool = False) -> None:
        self.calls: list[tuple[set[int], IPv4Address, set[IPv4Address]]] = []
        self.fail = fail
        self.idle = idle  # IpsecManager.idle: nothing of netd's left to remove

    def sync(
        self, vnis: Collection[int], local: IPv4Address, peers: Collection[IPv4Address]
    ) -> None:
        self.calls.append((set(vnis), local, set(peers)))
        if self.fail:
            raise KernelError("adding IPsec SA: Requested type not found")


def net(nid: str, vni: int, encrypted: bool) -> Network:
    options = {"vni": str(vni), **({"encrypted": "true"} if encrypted else {})}
    return Network(id=nid, name=nid, driver="overlay", subnets=(), options=options)


def make_sync(manager: FakeManager, networks: list[Network]) -> ClusterSync:
    sync = object.__new__(ClusterSync)
    sync.ipsec = manager  # type: ignore[assignment]
    sync._ipsec_ok = False
    sync.node = "h1"
    sync.state = SimpleNamespace(networks={n.id: n for n in networks})  # type: ignore[assignment]
    return sync


VIEW = ClusterView(
    alive={"h1": "10.251.0.1", "h2": "10.251.0.2", "h3": "bogus", "h4": "10.251.0.4"}
)


def test_hands_the_encrypted_vnis_this_node_and_its_live_peers() -> None:
    manager = FakeManager()
    sync = make_sync(manager, [net("a", 100, True), net("b", 200, False), net("c", 300, True)])
    asyncio.run(sync._sync_ipsec(VIEW))
    ((vnis, local, peers),) = manager.calls
    assert vnis == {100, 300}
    assert local == IPv4Address("10.251.0.1")
    # h3's recorded address is not IPv4: skipped (logged), not fatal.
    assert peers == {IPv4Address("10.251.0.2"), IPv4Address("10.251.0.4")}
    assert sync._ipsec_ok


def test_a_failed_pass_holds_encrypted_forwarding_and_a_lapsed_lease_keeps_state() -> None:
    manager = FakeManager(fail=True)
    sync = make_sync(manager, [net("a", 100, True)])
    sync._ipsec_ok = True
    asyncio.run(sync._sync_ipsec(VIEW))
    assert not sync._ipsec_ok  # _converge_network now holds the peers of "a"
    # This node's own lease lapsed: the manager is not called (nothing removed).
    calls = len(manager.calls)
    asyncio.run(sync._sync_ipsec(ClusterView(alive={"h2": "10.251.0.2"})))
    assert len(manager.calls) == calls


def test_no_encrypted_network_still_calls_with_none() -> None:
    manager = FakeManager()
    sync = make_sync(manager, [net("b", 200, False)])
    asyncio.run(sync._sync_ipsec(VIEW))
    assert manager.calls[0][0] == set()  # the manager removes whatever it had


def test_no_encrypted_network_and_nothing_left_costs_no_call() -> None:
    manager = FakeManager(idle=True)
    sync = make_sync(manager, [net("b", 200, False)])
    asyncio.run(sync._sync_ipsec(VIEW))
    assert manager.calls == [] and sync._ipsec_ok
    sync.state.networks["a"] = net("a", 100, True)
    asyncio.run(sync._sync_ipsec(VIEW))  # an encrypted network: called although idle
    assert manager.calls[0][0] == {100}
