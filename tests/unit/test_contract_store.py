"""The Store contract: one suite of checks run against every implementation of the seam.

A store is done when this suite passes for it. Adding an implementation is one line in
``STORES``: a name, how to open (or reopen) it under a directory, and whether what it holds
survives a reopen. The checks speak only through :class:`netd.store.base.Store`; engine-specific
behaviour (SQLite's WAL and faults, the recovery copy's files) has its own tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kit import endpoint, ip, network, subnet
from kit.stores import MemoryStore

from netd.errors import Conflict, NotFound, StoreError
from netd.model import Endpoint, Network, PortMapping
from netd.store.base import Store
from netd.store.mirror import CopyWriter, MirroredStore
from netd.store.sqlite import SqliteStore


@dataclass(frozen=True)
class StoreKind:
    """One implementation under test: ``open(directory)`` opens or reopens it there."""

    name: str
    open: Callable[[Path], Store]
    durable: bool  # a reopen under the same directory sees what was committed


STORES = [
    StoreKind("sqlite", lambda d: SqliteStore(d / "netd.db"), durable=True),
    StoreKind(
        "mirrored",
        lambda d: MirroredStore(SqliteStore(d / "netd.db"), CopyWriter(d / "copy")),
        durable=True,
    ),
    StoreKind("memory", MemoryStore.under, durable=False),
]


@pytest.fixture(params=STORES, ids=lambda k: k.name)
def kind(request: pytest.FixtureRequest) -> StoreKind:
    kind: StoreKind = request.param
    return kind


@pytest.fixture
def store(kind: StoreKind, tmp_path: Path) -> Iterator[Store]:
    s = kind.open(tmp_path)
    yield s
    s.close()


# A network with every field set away from its default, so a round trip loses nothing unseen.
RICH = network(
    "front",
    [subnet("10.88.0.0/24", ip_range="10.88.0.128/25", aux={"printer": "10.88.0.250"}),
     "fd00:88::/64"],
    internal=True,
    dns_enabled=False,
    options={"mtu": "1400", "com.docker.network.bridge.name": "br-front"},
    labels={"project": "shop"},
    created=1.0,
    owner_uid=1000,
)  # fmt: skip
OTHER = network("back", "10.88.0.0/24", created=2.0)  # same subnet: addresses are per network


def rich_endpoint(cid: str = "c1") -> Endpoint:
    return endpoint(
        RICH, cid, name=cid, hostname=f"{cid}.local", aliases=("web",), mac="02:42:0a:58:00:02",
        host_mac="02:42:0a:58:00:ff", dns_servers=("10.88.0.1",), created=2.5, owner_uid=1000,
        port_mappings=(PortMapping(8080, 80), PortMapping(53, 53, "udp", ip("::1"))),
    )  # fmt: skip


def snapshot(s: Store) -> tuple[object, ...]:
    """Everything a store holds, as seen through the Protocol."""
    nets = s.list_networks()
    return (nets, s.list_endpoints(), {n.id: s.get_cursors(n.id) for n in nets})


# --- networks ---------------------------------------------------------------------------------


def test_a_new_store_is_fresh_and_empty(store: Store) -> None:
    assert store.fresh is True
    assert snapshot(store) == ([], [], {})
    assert store.probe().ok and store.health.report().ok


def test_network_round_trip_keeps_every_field(store: Store) -> None:
    store.create_network(RICH)
    assert store.list_networks() == [RICH]


def test_networks_are_listed_by_creation_time_then_insertion(store: Store) -> None:
    late, early = network("late", created=5.0), network("early", created=1.0)
    tie = network("tie", created=5.0)
    for n in (late, early, tie):
        store.create_network(n)
    assert [n.name for n in store.list_networks()] == ["early", "late", "tie"]


@pytest.mark.parametrize(
    ("clash", "field"),
    [
        (dataclasses.replace(RICH, name="other"), "id"),
        (dataclasses.replace(OTHER, name="front"), "name"),
    ],
)
def test_duplicate_network_is_a_conflict_naming_the_field(
    store: Store, clash: Network, field: str
) -> None:
    store.create_network(RICH)
    before = snapshot(store)
    with pytest.raises(Conflict) as exc:
        store.create_network(clash)
    assert exc.value.field == field
    assert snapshot(store) == before


def test_delete_unknown_network_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as exc:
        store.delete_network("f" * 64)
    assert exc.value.value == "f" * 64


def test_delete_network_refused_while_endpoints_exist(store: Store) -> None:
    store.create_network(RICH)
    store.put_endpoint(endpoint(RICH, "c1"), {})
    before = snapshot(store)
    with pytest.raises(Conflict) as exc:
        store.delete_network(RICH.id)
    assert exc.value.value == RICH.id
    assert snapshot(store) == before


def test_delete_network_takes_its_cursors_with_it(store: Store) -> None:
    store.create_network(RICH)
    store.put_endpoint(endpoint(RICH, "c1"), {"10.88.0.0/24": ip("10.88.0.2")})
    assert store.delete_endpoint(RICH.id, "c1", "eth0")
    store.delete_network(RICH.id)
    assert snapshot(store) == ([], [], {})
    store.create_network(RICH)  # the same id again starts with no cursor
    assert store.get_cursors(RICH.id) == {}


# --- endpoints --------------------------------------------------------------------------------


def test_endpoint_round_trip_dual_stack(store: Store) -> None:
    store.create_network(RICH)
    ep = rich_endpoint()
    store.put_endpoint(ep, {"10.88.0.0/24": ip("10.88.0.2")})
    assert store.list_endpoints() == [ep]
    assert store.list_endpoints(RICH.id) == [ep]
    assert store.list_endpoints(OTHER.id) == []


def test_put_endpoint_is_idempotent_and_replaces_in_place(store: Store) -> None:
    store.create_network(RICH)
    first, second = endpoint(RICH, "c1"), endpoint(RICH, "c2", host=3)
    for ep in (first, second, first, second):
        store.put_endpoint(ep, {})
    assert store.list_endpoints() == [first, second]
    moved = dataclasses.replace(first, addresses=endpoint(RICH, host=9).addresses, name="x")
    store.put_endpoint(moved, {})
    assert store.list_endpoints() == [moved, second], "a replace keeps the listing order"
    # the replaced endpoint's old addresses are free again, the new ones are not
    store.put_endpoint(endpoint(RICH, "c3"), {})
    with pytest.raises(Conflict):
        store.put_endpoint(endpoint(RICH, "c4", host=9), {})


def test_two_interfaces_of_one_container_are_two_endpoints(store: Store) -> None:
    store.create_network(RICH)
    eth0, eth1 = endpoint(RICH, "c1"), endpoint(RICH, "c1", "eth1", host=3)
    store.put_endpoint(eth0, {})
    store.put_endpoint(eth1, {})
    assert store.list_endpoints(RICH.id) == [eth0, eth1]


def test_put_endpoint_on_unknown_network_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as exc:
        store.put_endpoint(endpoint(RICH), {"10.88.0.0/24": ip("10.88.0.2")})
    assert exc.value.value == RICH.id
    assert snapshot(store) == ([], [], {})


@pytest.mark.parametrize("taken", ["10.88.0.2/24", "fd00:88:0:0::2/64"])
def test_address_held_by_another_endpoint_is_refused_and_changes_nothing(
    store: Store, taken: str
) -> None:
    store.create_network(RICH)
    store.put_endpoint(endpoint(RICH, "holder"), {"10.88.0.0/24": ip("10.88.0.2")})
    before = snapshot(store)
    with pytest.raises(Conflict) as exc:
        store.put_endpoint(
            endpoint(RICH, "late", ip=["10.88.0.7/24", taken]), {"10.88.0.0/24": ip("10.88.0.7")}
        )
    assert exc.value.field == "address"
    assert "holder" in str(exc.value)
    assert snapshot(store) == before


def test_the_same_address_on_two_networks_is_fine(store: Store) -> None:
    store.create_network(RICH)
    store.create_network(OTHER)
    a, b = endpoint(RICH, "c1", ip="10.88.0.2/24"), endpoint(OTHER, "c2", ip="10.88.0.2/24")
    store.put_endpoint(a, {})
    store.put_endpoint(b, {})
    assert store.list_endpoints() == [a, b]
    assert store.list_endpoints(OTHER.id) == [b]


def test_delete_endpoint_releases_addresses_and_is_idempotent(store: Store) -> None:
    store.create_network(RICH)
    store.put_endpoint(endpoint(RICH, "c1"), {})
    assert store.delete_endpoint(RICH.id, "c1", "eth0") is True
    assert store.delete_endpoint(RICH.id, "c1", "eth0") is False
    assert store.delete_endpoint("f" * 64, "nobody", "eth0") is False
    store.put_endpoint(endpoint(RICH, "c2"), {})  # the same addresses, free again
    assert [e.container_id for e in store.list_endpoints()] == ["c2"]


def test_cursors_upsert_only_the_given_subnets(store: Store) -> None:
    store.create_network(RICH)
    store.create_network(OTHER)
    assert store.get_cursors(RICH.id) == {}
    v4, v6 = "10.88.0.0/24", "fd00:88::/64"
    store.put_endpoint(endpoint(RICH, "c1"), {v4: ip("10.88.0.2"), v6: ip("fd00:88::2")})
    store.put_endpoint(endpoint(RICH, "c2", host=3), {v4: ip("10.88.0.3")})
    assert store.get_cursors(RICH.id) == {v4: ip("10.88.0.3"), v6: ip("fd00:88::2")}
    assert store.get_cursors(OTHER.id) == {}
    assert store.get_cursors("f" * 64) == {}


# --- lifetime ---------------------------------------------------------------------------------


def test_everything_survives_a_reopen(kind: StoreKind, tmp_path: Path) -> None:
    if not kind.durable:
        pytest.skip(f"{kind.name}: keeps nothing across a reopen (by design)")
    with_data = kind.open(tmp_path)
    with_data.create_network(RICH)
    with_data.create_network(OTHER)
    with_data.put_endpoint(rich_endpoint(), {"10.88.0.0/24": ip("10.88.0.2")})
    with_data.put_endpoint(endpoint(OTHER, "c2"), {})
    before = snapshot(with_data)
    with_data.close()
    again = kind.open(tmp_path)
    try:
        assert again.fresh is False
        assert snapshot(again) == before
    finally:
        again.close()


def test_a_closed_store_refuses_calls(kind: StoreKind, tmp_path: Path) -> None:
    s = kind.open(tmp_path)
    s.close()
    s.close()  # closing twice is harmless
    calls: list[Callable[[], object]] = [
        s.list_networks,
        lambda: s.create_network(RICH),
        lambda: s.list_endpoints(),
        lambda: s.put_endpoint(endpoint(RICH), {}),
        lambda: s.get_cursors(RICH.id),
    ]
    for call in calls:
        with pytest.raises(StoreError):
            call()
