"""Concurrent put_endpoint from 16 threads over two connections: one winner per address."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import endpoint, network

from netd.errors import Conflict
from netd.model import Endpoint, Network
from netd.store.sqlite import SqliteStore

THREADS = 16
ROUNDS = 5


def make_network(i: int) -> Network:
    return network(f"net{i}", ["10.88.0.0/24", "fd00:88::/64"], id=f"{i:064x}")


def make_endpoint(net: Network, cid: str, addrs: list[str]) -> Endpoint:
    return endpoint(net, cid, ip=addrs, host_ifname=f"nv{cid}")


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[SqliteStore]]:
    # Two connections on one file: the lock serialises threads on one connection, and SQLite's
    # own write lock (BEGIN IMMEDIATE) must serialise the two connections.
    opened = [SqliteStore(tmp_path / "netd.db", busy_timeout=30.0) for _ in range(2)]
    yield opened
    for s in opened:
        s.close()


def race(stores: list[SqliteStore], endpoints: list[Endpoint]) -> dict[str, Exception | None]:
    """Put every endpoint from its own thread, all released at once; outcome per container."""
    barrier = threading.Barrier(len(endpoints))
    outcome: dict[str, Exception | None] = {}

    def attach(i: int, ep: Endpoint) -> None:
        barrier.wait()
        try:
            stores[i % len(stores)].put_endpoint(ep, {})
            outcome[ep.container_id] = None
        except Exception as e:
            outcome[ep.container_id] = e

    threads = [threading.Thread(target=attach, args=(i, ep)) for i, ep in enumerate(endpoints)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return outcome


def allocations(path: Path, network_id: str) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT address, container_id FROM allocations WHERE network_id = ?", (network_id,)
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_one_winner_per_contended_address(
    stores: list[SqliteStore], tmp_path: Path, round_: int
) -> None:
    net = make_network(round_)
    stores[0].create_network(net)
    # Four threads want each of four IPv4 addresses; the IPv6 address follows the same groups.
    wanted = {
        f"c{i}": [f"10.88.0.{10 + i % 4}", f"fd00:88::{10 + i % 4:x}"] for i in range(THREADS)
    }
    endpoints = [
        make_endpoint(net, cid, [f"{a}/{24 if '.' in a else 64}" for a in addrs])
        for cid, addrs in wanted.items()
    ]
    outcome = race(stores, endpoints)

    winners = sorted(cid for cid, err in outcome.items() if err is None)
    assert len(outcome) == THREADS
    assert all(isinstance(err, Conflict) for err in outcome.values() if err is not None)
    assert len(winners) == 4
    assert sorted({wanted[w][0] for w in winners}) == [f"10.88.0.{n}" for n in range(10, 14)]
    held = allocations(tmp_path / "netd.db", net.id)
    assert held == {a: w for w in winners for a in wanted[w]}
    for cid, err in outcome.items():
        if err is not None:
            # Each loser was told who holds the address it wanted.
            holder = held[wanted[cid][0]]
            assert f"container {holder} interface eth0" in str(err)
    assert sorted(e.container_id for e in stores[1].list_endpoints(net.id)) == winners


def test_losers_partial_claims_are_not_kept(stores: list[SqliteStore], tmp_path: Path) -> None:
    net = make_network(99)
    stores[0].create_network(net)
    # Every thread wants its own address plus one shared address: one winner, and none of the
    # losers' own addresses may end up allocated.
    endpoints = [
        make_endpoint(net, f"c{i}", [f"10.88.0.{100 + i}/24", "10.88.0.2/24"])
        for i in range(THREADS)
    ]
    outcome = race(stores, endpoints)
    winners = [cid for cid, err in outcome.items() if err is None]
    assert len(winners) == 1
    w = int(winners[0][1:])
    assert allocations(tmp_path / "netd.db", net.id) == {
        f"10.88.0.{100 + w}": winners[0],
        "10.88.0.2": winners[0],
    }
