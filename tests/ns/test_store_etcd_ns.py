"""EtcdStore against a real etcd: what only a shared, remote store must get right.

Two clients (as two nodes would be) race for one network name, one subnet and one address:
etcd's transactions let exactly one win. An etcd that stops answering (SIGSTOP) makes calls
fail within the bounded time with a StoreError naming etcd and its endpoint, and the same
client works again after SIGCONT. The contract every store keeps is in
test_contract_store_etcd_ns.py.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from base64 import b64decode, b64encode
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from etcd_kit import etcd, in_etcd_ns
from kit import endpoint, ip, network
from netns_fixtures import wait_for
from netns_fixtures.etcd import EtcdServer

from netd.errors import Conflict, NetdError, StoreError
from netd.store.etcd import EtcdStore

__all__ = ["etcd", "in_etcd_ns"]  # fixtures, imported for pytest

BOUND = 10.0  # seconds: issue 16's limit for any call while etcd is unreachable


@pytest.fixture
def prefix() -> str:
    return f"/netd-test/{uuid.uuid4().hex}/"


@pytest.fixture
def pair(in_etcd_ns: EtcdServer, prefix: str) -> Iterator[tuple[EtcdStore, EtcdStore]]:
    """Two independent clients on the same prefix, as two nodes would be."""
    a, b = EtcdStore([in_etcd_ns.url], prefix=prefix), EtcdStore([in_etcd_ns.url], prefix=prefix)
    yield a, b
    a.close()
    b.close()


def etcd_keys(server: EtcdServer, prefix: str) -> dict[str, str]:
    """Every key under ``prefix`` and its value, asked of etcd's gateway with curl."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": b64encode(prefix.encode()).decode(),
                       "range_end": b64encode(end.encode()).decode()})  # fmt: skip
    out = server.ns.run("curl", "-sf", "--max-time", "5", "-d", body, f"{server.url}/v3/kv/range")
    return {
        b64decode(kv["key"]).decode(): b64decode(kv.get("value", "")).decode()
        for kv in json.loads(out).get("kvs", [])
    }


def race(calls: list[Callable[[], None]]) -> list[BaseException | None]:
    """Run the calls at once (threads inherit the namespace); each one's error or None."""
    start = threading.Barrier(len(calls))
    results: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            calls[i]()
        except NetdError as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    return results


def test_first_open_of_a_prefix_is_fresh_and_only_the_first(pair: tuple[EtcdStore, ...]) -> None:
    a, b = pair
    assert (a.fresh, b.fresh) == (True, False)


@pytest.mark.parametrize("rounds", [20])
def test_two_clients_racing_for_one_name_exactly_one_wins(
    pair: tuple[EtcdStore, EtcdStore], rounds: int
) -> None:
    a, b = pair
    for r in range(rounds):
        mine = network(f"net{r}", f"10.{r}.1.0/24", created=float(r))
        # another id (ids derive from names in the kit), the same name
        theirs = dataclasses.replace(network(f"x{r}", f"10.{r}.2.0/24"), name=f"net{r}")
        assert mine.id != theirs.id
        results = race([partial(a.create_network, mine), partial(b.create_network, theirs)])
        assert sorted(type(x).__name__ for x in results) == ["Conflict", "NoneType"], results
        loser = next(x for x in results if x is not None)
        assert isinstance(loser, Conflict) and loser.field == "name"
        assert [n.name for n in b.list_networks()].count(f"net{r}") == 1
    assert len(a.list_networks()) == rounds


def test_two_clients_racing_for_one_subnet_exactly_one_wins(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = pair
    one, two = network("one", "10.70.0.0/24"), network("two", "10.70.0.0/24")
    results = race([lambda: a.create_network(one), lambda: b.create_network(two)])
    assert sum(x is None for x in results) == 1, results
    loser = next(x for x in results if x is not None)
    assert isinstance(loser, Conflict) and loser.field == "subnet"
    assert loser.value == "10.70.0.0/24"
    winner = a.list_networks()[0]
    a.delete_network(winner.id)  # the subnet is free again with its network gone
    loser_net = two if winner.id == one.id else one
    b.create_network(loser_net)
    assert [n.id for n in a.list_networks()] == [loser_net.id]


def test_two_clients_racing_for_one_address_exactly_one_wins(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = pair
    net = network("shared", "10.80.0.0/16")
    a.create_network(net)
    for host in range(2, 22):
        first = endpoint(net, f"a{host}", host=host)
        second = endpoint(net, f"b{host}", host=host)
        results = race([partial(a.put_endpoint, first, {}), partial(b.put_endpoint, second, {})])
        assert sum(x is None for x in results) == 1, results
        loser = next(x for x in results if x is not None)
        assert isinstance(loser, Conflict) and loser.field == "address"
    held = [str(i.ip) for e in b.list_endpoints(net.id) for i in e.addresses]
    assert len(held) == 20 and len(set(held)) == 20


def test_delete_network_racing_an_endpoint_put_never_orphans_it(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = pair
    for r in range(10):
        net = network(f"gone{r}", f"10.90.{r}.0/24")
        a.create_network(net)
        ep = endpoint(net, "c1")
        race([partial(a.delete_network, net.id), partial(b.put_endpoint, ep, {})])
        nets, eps = a.list_networks(), a.list_endpoints(net.id)
        # Either the network stayed with its endpoint, or both are gone: never an orphan.
        assert (net.id in [n.id for n in nets]) == bool(eps), (nets, eps)
        if eps:
            assert b.delete_endpoint(net.id, "c1", "eth0")
            a.delete_network(net.id)


def test_a_paused_etcd_fails_calls_in_bounded_time_then_recovers(
    in_etcd_ns: EtcdServer, prefix: str
) -> None:
    store = EtcdStore([in_etcd_ns.url], prefix=prefix)
    try:
        store.create_network(network("before", "10.91.0.0/24"))
        in_etcd_ns.pause()
        try:
            for call in (
                store.list_networks,
                lambda: store.create_network(network("during", "10.92.0.0/24")),
            ):
                started = time.monotonic()
                with pytest.raises(StoreError) as exc:
                    call()
                assert time.monotonic() - started <= BOUND
                assert "etcd" in str(exc.value) and in_etcd_ns.url in str(exc.value)
            report = store.probe()
            assert not report.ok and "etcd" in report.reason
        finally:
            in_etcd_ns.resume()
        wait_for("the store healthy again", lambda: store.probe().ok, timeout=30)
        assert "before" in [n.name for n in store.list_networks()]
        store.create_network(network("after", "10.93.0.0/24"))
    finally:
        store.close()


def test_an_unreachable_endpoint_is_a_store_error_naming_it(in_etcd_ns: EtcdServer) -> None:
    dead = "http://127.0.0.1:2999"  # nothing listens there inside the etcd namespace
    with pytest.raises(StoreError) as exc:
        EtcdStore([dead], prefix="/netd-test/dead/")
    assert "etcd" in str(exc.value) and dead in str(exc.value)


def test_a_dead_member_is_skipped_for_a_live_one(in_etcd_ns: EtcdServer, prefix: str) -> None:
    store = EtcdStore(["http://127.0.0.1:2999", in_etcd_ns.url], prefix=prefix)
    try:
        store.create_network(network("through-the-live-one"))
        assert [n.name for n in store.list_networks()] == ["through-the-live-one"]
    finally:
        store.close()


def test_keys_in_etcd_read_back_with_curl(
    in_etcd_ns: EtcdServer, pair: tuple[EtcdStore, EtcdStore], prefix: str
) -> None:
    """The layout of docs/store.md, read by etcd's own gateway through curl, not by netd."""
    a, _ = pair
    net = network("web", "10.94.0.0/24")
    a.create_network(net)
    a.put_endpoint(endpoint(net, "c1"), {"10.94.0.0/24": ip("10.94.0.2")})
    keys = etcd_keys(in_etcd_ns, prefix)
    assert keys == {
        f"{prefix}meta/created": "1",
        f"{prefix}networks/{net.id}": keys[f"{prefix}networks/{net.id}"],
        f"{prefix}network-names/web": net.id,
        f"{prefix}subnets/10.94.0.0/24": net.id,
        f"{prefix}endpoints/{net.id}/c1/eth0": keys[f"{prefix}endpoints/{net.id}/c1/eth0"],
        f"{prefix}allocations/{net.id}/10.94.0.2": "c1/eth0",
        f"{prefix}cursors/{net.id}/10.94.0.0/24": "10.94.0.2",
    }
    assert json.loads(keys[f"{prefix}networks/{net.id}"])["name"] == "web"
    assert a.delete_endpoint(net.id, "c1", "eth0")
    a.delete_network(net.id)
    assert etcd_keys(in_etcd_ns, prefix) == {f"{prefix}meta/created": "1"}, "nothing left behind"
