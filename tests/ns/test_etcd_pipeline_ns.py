"""An attach's etcd write sent ahead and read later (EtcdStore.begin_put_endpoint), real etcd.

- begin sends the transaction and returns without its answer; the write is in etcd before
  finish is called (etcd worked on it meanwhile); finish reads the answer: one transaction.
- A conflict (another holder of the address) is raised by finish, and nothing was written.
- A lost compare (this client's memory is stale) is retried by finish the usual way.
- etcd not answering: finish is bounded and raises StoreUnreachable naming etcd; a pipelined
  write left unanswered is sent again the usual way once etcd answers, without a duplicate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from etcd_kit import etcd, in_etcd_ns
from kit import endpoint, network
from netns_fixtures import wait_for
from netns_fixtures.etcd import EtcdServer

from netd.errors import Conflict, StoreUnreachable
from netd.store.etcd import EtcdStore

__all__ = ["etcd", "in_etcd_ns"]  # fixtures, imported for pytest

NET = network("ov1", "10.60.0.0/16", driver="overlay", options={"vni": "4096"})


@pytest.fixture
def stores(in_etcd_ns: EtcdServer) -> Iterator[tuple[EtcdStore, EtcdStore]]:
    prefix = f"/netd-test/{uuid.uuid4().hex}/"
    made = [
        EtcdStore([in_etcd_ns.url], prefix=prefix, node=n, request_timeout=1.0, deadline=2.0)
        for n in ("h1", "h2")
    ]
    made[0].create_network(NET)
    yield made[0], made[1]
    for s in made:
        s.close()


def keys(server: EtcdServer, store: EtcdStore, rest: str) -> dict[str, str]:
    return server.keys(store.prefix + rest)


def test_sent_ahead_written_before_finish_one_transaction(
    stores: tuple[EtcdStore, EtcdStore], in_etcd_ns: EtcdServer
) -> None:
    h1, _ = stores
    before = h1.stats.transactions
    finish = h1.begin_put_endpoint(endpoint(NET, "c1", ip="10.60.0.2/16", node="h1"))
    assert h1.stats.transactions == before  # not read yet
    wait_for("etcd wrote it", lambda: keys(in_etcd_ns, h1, "endpoints/"), 5)
    finish()
    assert h1.stats.transactions == before + 1
    assert list(keys(in_etcd_ns, h1, "allocations/").values()) == ["c1/eth0"]


def test_a_conflict_is_raised_by_finish_and_writes_nothing(
    stores: tuple[EtcdStore, EtcdStore], in_etcd_ns: EtcdServer
) -> None:
    h1, h2 = stores
    h1.put_endpoint(endpoint(NET, "c1", ip="10.60.0.2/16", node="h1"), {})
    finish = h2.begin_put_endpoint(endpoint(NET, "c2", ip="10.60.0.2/16", node="h2"))
    with pytest.raises(Conflict) as err:
        finish()
    assert err.value.field == "address"
    assert set(keys(in_etcd_ns, h1, "endpoints/")) == {f"{h1.prefix}endpoints/{NET.id}/c1/eth0"}


def test_a_lost_compare_is_retried_by_finish(
    stores: tuple[EtcdStore, EtcdStore], in_etcd_ns: EtcdServer
) -> None:
    h1, h2 = stores
    first = endpoint(NET, "c1", ip="10.60.0.2/16", node="h1")
    h1.put_endpoint(first, {})
    # h2 takes the record over behind h1's back (h1's memory of it is now stale).
    h2.delete_endpoint(NET.id, "c1", "eth0")
    h2.put_endpoint(endpoint(NET, "c1", ip="10.60.0.3/16", node="h2"), {})
    lost = h1.stats.compare_failures
    h1.begin_put_endpoint(endpoint(NET, "c1", ip="10.60.0.4/16", node="h1"))()
    assert h1.stats.compare_failures == lost + 1
    assert list(keys(in_etcd_ns, h1, "allocations/")) == [
        f"{h1.prefix}allocations/{NET.id}/10.60.0.4"
    ]


def test_unanswered_it_is_bounded_then_sent_again_without_duplicate(
    stores: tuple[EtcdStore, EtcdStore], in_etcd_ns: EtcdServer
) -> None:
    h1, _ = stores
    ep = endpoint(NET, "c1", ip="10.60.0.2/16", node="h1")
    in_etcd_ns.pause()
    try:
        finish = h1.begin_put_endpoint(ep)  # the kernel takes it; etcd does not read it
        start = time.monotonic()
        with pytest.raises(StoreUnreachable) as err:
            finish()
        assert "etcd" in str(err.value)
        assert time.monotonic() - start < 10
    finally:
        in_etcd_ns.resume()
    # etcd now reads what was sent while it was paused (it may apply it); the same put again
    # leaves exactly one record and one address key.
    h1.put_endpoint(ep, {})
    assert list(keys(in_etcd_ns, h1, "allocations/").values()) == ["c1/eth0"]
    assert len(keys(in_etcd_ns, h1, "endpoints/")) == 1
