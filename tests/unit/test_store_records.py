"""SqliteStore operations: round trips, conflicts, and that a refused write changes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import endpoint, ip, network, subnet

from netd import faults
from netd.errors import Conflict, InvalidInput, NotFound, StoreError
from netd.model import Endpoint, IPAddress, Network, PortMapping
from netd.store.sqlite import SqliteStore

NET_ID = "a" * 64
OTHER_ID = "b" * 64


def make_network(nid: str = NET_ID, name: str = "front", created: float = 1.0) -> Network:
    return network(
        name,
        [subnet("10.88.0.0/24", ip_range="10.88.0.128/25", aux={"printer": "10.88.0.250"}),
         "fd00:88::/64"],
        id=nid,
        internal=True,
        dns_enabled=False,
        options={"com.docker.network.bridge.name": "br-front", "mtu": "1400"},
        labels={"project": "shop", "tier": "web"},
        created=created,
        owner_uid=1000,
    )  # fmt: skip


def make_endpoint(cid: str, *addrs: str, ifname: str = "eth0", nid: str = NET_ID) -> Endpoint:
    return endpoint(
        make_network(nid),
        cid,
        ifname,
        ip=addrs,
        host_ifname=f"nv{cid[:8]}",
        mac="02:42:0a:58:00:02",
        host_mac="02:42:0a:58:00:ff",
        name=cid,
        hostname=f"{cid}.local",
        aliases=("web", "www"),
        port_mappings=(
            PortMapping(host_port=8080, container_port=80),
            PortMapping(host_port=5353, container_port=53, protocol="udp", host_ip=ip("::1")),
        ),
        dns_servers=("10.88.0.1",),
        created=2.5,
        owner_uid=1000,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "netd.db")
    s.create_network(make_network())
    yield s
    s.close()


def snapshot(s: SqliteStore) -> tuple[object, ...]:
    """Everything observable through the interface, for before/after comparisons."""
    nets = s.list_networks()
    return (nets, s.list_endpoints(), *(s.get_cursors(n.id) for n in nets))


def allocation_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """The allocations table read independently of the store."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT network_id, address, container_id, ifname FROM allocations ORDER BY address"
        ).fetchall()
    finally:
        conn.close()


def test_network_round_trip_keeps_every_field(tmp_path: Path) -> None:
    net = make_network()
    with SqliteStore(tmp_path / "netd.db") as s:
        s.create_network(net)
        assert s.list_networks() == [net]
    with SqliteStore(tmp_path / "netd.db") as s:
        assert s.list_networks() == [net]


def test_networks_are_listed_by_creation_time(store: SqliteStore) -> None:
    store.create_network(make_network(OTHER_ID, "early", created=0.5))
    store.create_network(make_network("c" * 64, "late", created=9.0))
    assert [n.name for n in store.list_networks()] == ["early", "front", "late"]


def test_endpoint_round_trip_ipv4_and_ipv6(store: SqliteStore, tmp_path: Path) -> None:
    ep = make_endpoint("web1", "10.88.0.2/24", "fd00:88::2/64")
    store.put_endpoint(ep, {"10.88.0.0/24": ip("10.88.0.2"), "fd00:88::/64": ip("fd00:88::2")})
    assert store.list_endpoints() == [ep]
    assert store.list_endpoints(NET_ID) == [ep]
    assert store.list_endpoints(OTHER_ID) == []
    assert store.get_cursors(NET_ID) == {
        "10.88.0.0/24": ip("10.88.0.2"),
        "fd00:88::/64": ip("fd00:88::2"),
    }
    assert allocation_rows(tmp_path / "netd.db") == [
        (NET_ID, "10.88.0.2", "web1", "eth0"),
        (NET_ID, "fd00:88::2", "web1", "eth0"),
    ]


def test_create_network_duplicate_id_names_the_id(store: SqliteStore) -> None:
    with pytest.raises(Conflict) as err:
        store.create_network(make_network(NET_ID, "other-name"))
    assert f"network id {NET_ID} already exists" in err.value.message
    assert err.value.field == "id"
    assert [n.name for n in store.list_networks()] == ["front"]


def test_create_network_duplicate_name_names_the_name(store: SqliteStore) -> None:
    with pytest.raises(Conflict) as err:
        store.create_network(make_network(OTHER_ID, "front"))
    assert 'the name "front" is already used by network ' + NET_ID in err.value.message
    assert err.value.field == "name"
    assert len(store.list_networks()) == 1


def test_address_held_by_another_endpoint_is_refused_naming_holder(store: SqliteStore) -> None:
    store.put_endpoint(make_endpoint("holder", "10.88.0.5/24", ifname="net1"), {})
    with pytest.raises(Conflict) as err:
        # Same address, different prefix length: still the same address.
        store.put_endpoint(make_endpoint("late", "10.88.0.5/16"), {})
    msg = err.value.message
    assert "address 10.88.0.5" in msg and "container holder interface net1" in msg
    assert err.value.value == "10.88.0.5"


def test_ipv6_conflict_matches_the_canonical_form(store: SqliteStore) -> None:
    store.put_endpoint(make_endpoint("holder", "fd00:88::5/64"), {})
    with pytest.raises(Conflict, match=r"address fd00:88::5 .* container holder interface eth0"):
        store.put_endpoint(make_endpoint("late", "fd00:88:0:0:0:0:0:0005/64"), {})


def test_conflict_rolls_back_endpoint_allocations_and_cursors(
    store: SqliteStore, tmp_path: Path
) -> None:
    store.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {"10.88.0.0/24": ip("10.88.0.2")})
    store.put_endpoint(make_endpoint("b", "10.88.0.3/24"), {"10.88.0.0/24": ip("10.88.0.3")})
    before = snapshot(store)
    rows_before = allocation_rows(tmp_path / "netd.db")
    replacement = make_endpoint("b", "10.88.0.4/24", "10.88.0.2/24", "fd00:88::4/64")
    cursors = {"10.88.0.0/24": ip("10.88.0.4"), "fd00:88::/64": ip("fd00:88::4")}
    with pytest.raises(Conflict, match="container a interface eth0"):
        store.put_endpoint(replacement, cursors)
    assert snapshot(store) == before
    assert allocation_rows(tmp_path / "netd.db") == rows_before
    # The addresses the failed write would have taken are still free.
    store.put_endpoint(make_endpoint("c", "10.88.0.4/24", "fd00:88::4/64"), {})
    with SqliteStore(tmp_path / "netd.db") as again:
        assert [e.container_id for e in again.list_endpoints()] == ["a", "b", "c"]


def test_put_replaces_exactly_the_endpoints_allocations(store: SqliteStore, tmp_path: Path) -> None:
    store.put_endpoint(make_endpoint("a", "10.88.0.2/24", "10.88.0.3/24"), {})
    store.put_endpoint(make_endpoint("b", "10.88.0.9/24"), {})
    store.put_endpoint(make_endpoint("a", "10.88.0.7/24"), {})
    assert allocation_rows(tmp_path / "netd.db") == [
        (NET_ID, "10.88.0.7", "a", "eth0"),
        (NET_ID, "10.88.0.9", "b", "eth0"),
    ]
    # Replacing keeps the endpoint's place in the listing.
    assert [e.container_id for e in store.list_endpoints()] == ["a", "b"]
    store.put_endpoint(make_endpoint("c", "10.88.0.2/24"), {})  # released, so free again


def test_same_container_two_interfaces_are_two_endpoints(store: SqliteStore) -> None:
    store.put_endpoint(make_endpoint("a", "10.88.0.2/24", ifname="eth0"), {})
    store.put_endpoint(make_endpoint("a", "10.88.0.3/24", ifname="eth1"), {})
    assert [e.key for e in store.list_endpoints()] == [("a", "eth0"), ("a", "eth1")]
    with pytest.raises(Conflict, match="container a interface eth0"):
        store.put_endpoint(make_endpoint("a", "10.88.0.2/24", ifname="eth1"), {})


def test_same_address_on_two_networks_is_fine(store: SqliteStore) -> None:
    store.create_network(make_network(OTHER_ID, "back"))
    store.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {})
    store.put_endpoint(make_endpoint("b", "10.88.0.2/24", nid=OTHER_ID), {})
    assert len(store.list_endpoints()) == 2


def test_put_endpoint_on_unknown_network_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as err:
        store.put_endpoint(make_endpoint("a", "10.88.0.2/24", nid=OTHER_ID), {})
    assert err.value.message == f"putting endpoint a/eth0 on network {OTHER_ID}: no such network"
    assert store.list_endpoints() == []


def test_cursors_upsert_only_the_given_subnets(store: SqliteStore) -> None:
    store.put_endpoint(
        make_endpoint("a", "10.88.0.2/24"),
        {"10.88.0.0/24": ip("10.88.0.2"), "fd00:88::/64": ip("fd00:88::9")},
    )
    store.put_endpoint(make_endpoint("b", "10.88.0.3/24"), {"10.88.0.0/24": ip("10.88.0.3")})
    assert store.get_cursors(NET_ID) == {
        "10.88.0.0/24": ip("10.88.0.3"),
        "fd00:88::/64": ip("fd00:88::9"),
    }
    assert store.get_cursors(OTHER_ID) == {}


@pytest.mark.parametrize(
    ("endpoint", "cursors", "field", "value"),
    [
        (make_endpoint("a", "10.88.0.2/24", "10.88.0.2/25"), {}, "addresses", "10.88.0.2"),
        (make_endpoint("a", "10.88.0.2/24"), {"10.88.0.1/24": ip("10.88.0.2")}, "cursors", None),
        (make_endpoint("a", "10.88.0.2/24"), {"bogus": ip("10.88.0.2")}, "cursors", "bogus"),
        (
            make_endpoint("a", "10.88.0.2/24"),
            {"10.88.0.0/24": ip("10.99.0.2")},
            "cursors",
            "10.88.0.0/24=10.99.0.2",
        ),
    ],
)
def test_invalid_put_is_refused_before_writing(
    store: SqliteStore,
    endpoint: Endpoint,
    cursors: dict[str, IPAddress],
    field: str,
    value: str | None,
) -> None:
    before = snapshot(store)
    with pytest.raises(InvalidInput) as err:
        store.put_endpoint(endpoint, cursors)
    assert err.value.field == field
    if value is not None:
        assert err.value.value == value
    assert snapshot(store) == before


def test_delete_endpoint_releases_addresses(store: SqliteStore, tmp_path: Path) -> None:
    store.put_endpoint(make_endpoint("a", "10.88.0.2/24", "fd00:88::2/64"), {})
    assert store.delete_endpoint(NET_ID, "a", "eth0") is True
    assert store.delete_endpoint(NET_ID, "a", "eth0") is False
    assert store.list_endpoints() == []
    assert allocation_rows(tmp_path / "netd.db") == []
    store.put_endpoint(make_endpoint("b", "10.88.0.2/24", "fd00:88::2/64"), {})


def test_delete_network_refused_while_endpoints_exist(store: SqliteStore) -> None:
    store.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {"10.88.0.0/24": ip("10.88.0.2")})
    before = snapshot(store)
    with pytest.raises(Conflict) as err:
        store.delete_network(NET_ID)
    assert 'deleting network "front"' in err.value.message
    assert "1 endpoint(s) still attached: a/eth0" in err.value.message
    assert snapshot(store) == before


def test_delete_network_removes_its_cursors(store: SqliteStore) -> None:
    store.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {"10.88.0.0/24": ip("10.88.0.2")})
    store.delete_endpoint(NET_ID, "a", "eth0")
    store.delete_network(NET_ID)
    assert store.list_networks() == []
    store.create_network(make_network())  # same id again: no stale cursor survives
    assert store.get_cursors(NET_ID) == {}


def test_delete_unknown_network_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as err:
        store.delete_network(OTHER_ID)
    assert OTHER_ID in err.value.message


def test_fault_after_writes_rolls_everything_back(store: SqliteStore) -> None:
    store.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {"10.88.0.0/24": ip("10.88.0.2")})
    before = snapshot(store)
    faults.arm("store.put_endpoint=raise")
    try:
        with pytest.raises(faults.InjectedFault):
            store.put_endpoint(
                make_endpoint("a", "10.88.0.3/24"), {"10.88.0.0/24": ip("10.88.0.3")}
            )
    finally:
        faults.arm("")
    assert snapshot(store) == before


def test_sqlite_failure_is_a_store_error_naming_the_operation(tmp_path: Path) -> None:
    path = tmp_path / "netd.db"
    with SqliteStore(path, busy_timeout=0.05) as s:
        s.create_network(make_network())
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        try:
            with pytest.raises(StoreError) as err:
                s.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {})
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert type(err.value) is StoreError
        assert "while putting endpoint a/eth0" in err.value.message
        assert "locked" in err.value.message
        assert isinstance(err.value.__cause__, sqlite3.Error)
        s.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {})  # usable afterwards


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "netd.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        s.list_networks()
