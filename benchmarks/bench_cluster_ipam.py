"""Cluster IPAM at scale, by simulation: N nodes x M ADDs on one overlay network, one real etcd.

Run from the repository root, as root:  .venv/bin/python benchmarks/bench_cluster_ipam.py
(options: --nodes 10,50,200 --per-node 50 --block 26 --scenarios roomy,tight,first)

Issue 16's scale harness. Each simulated node is a thread with its own ``EtcdStore`` (its own
HTTP session, ``node="h<i>"``) and its own ``BlockAllocator``; there is no kernel work, no
daemon. An ADD is what the service's attach does to the store: allocate, put the endpoint
"creating" (with the blocks the allocator expects to claim), commit, put it "ready". The
daemon's etcd watch is simulated in-process: every committed allocation and claim goes into a
shared feed, and each node applies what it has not seen yet (``BlockAllocator.observe``)
before each allocation, as watch events would have arrived by then (the fan-out cost of real
watches on etcd is not measured). A refusal (the block or the address taken first, by a change
the node has not seen yet) is noted the same way and the node picks again; after 8 address
refusals in a row for one ADD it re-reads the cluster (``set_view``), as a resync would. All
nodes start together behind a barrier. etcd runs in a sandbox namespace
(``netns_fixtures.etcd``) on its loopback; the benchmark's threads enter that namespace
(``inside``), never the host network.

Scenarios: ``roomy`` (subnet with room for every node's blocks; nodes start their block search
at a hash of their name, as Calico does), ``first`` (the same, but every node searches from the
subnet's first block: what hashing avoids), ``tight`` (fewer /26 blocks than nodes: some nodes
get no block and borrow every address). After each run every allocation key and every endpoint
is read back: duplicates must be 0 and each endpoint's addresses must be its allocation keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import format_table, machine_description, write_results

from netd.errors import Conflict, StoreError
from netd.ipam.blocks import BlockAllocator
from netd.model import Endpoint, IPAddress, Network, Subnet
from netd.store.etcd import EtcdStore
from netd.store.etcd_put import BlockClaimed

RESYNC_AFTER = 8  # address refusals in a row for one ADD before a node re-reads the cluster


class Feed:
    """The cluster's changes in commit order, as each node's etcd watch would deliver them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, str, str]] = []  # (kind, value, node)

    def publish(self, events: list[tuple[str, str, str]]) -> None:
        with self._lock:
            self._events.extend(events)

    def since(self, seen: int) -> list[tuple[str, str, str]]:
        with self._lock:
            return self._events[seen:]


@dataclass
class NodeResult:
    adds: int = 0
    refreshes: int = 0  # refusals (a block or an address taken first) that made it pick again
    resyncs: int = 0  # full re-reads of the cluster after RESYNC_AFTER refusals in a row
    store_errors: int = 0  # timed-out re-reads, retried after a back-off
    errors: list[str] = field(default_factory=list)


def overlay(cidr: str) -> Network:
    net = ipaddress.ip_network(cidr)
    return Network(
        id=uuid.uuid4().hex * 2,
        name=f"ov-{uuid.uuid4().hex[:8]}",
        driver="overlay",
        subnets=(Subnet(subnet=net, gateway=net.network_address + 1),),
    )


def plan(nodes: int, per_node: int, block: int, scenario: str) -> tuple[str, int]:
    """(subnet, ADDs per node): room for every node's blocks twice over; or, tight, fewer
    blocks than nodes and ADDs filling ~90% of the subnet, so that late nodes must borrow."""
    size = 2 ** (32 - block)
    if scenario == "tight":
        blocks = 2 ** max(0, math.floor(math.log2(nodes * 0.75)))
        per_node = max(1, math.floor(blocks * (size - 2) * 0.9 / nodes))
    else:
        blocks = 2 ** math.ceil(math.log2(nodes * math.ceil(per_node / (size - 2)) * 2))
    prefix = block - round(math.log2(blocks))
    return f"10.{64 + nodes % 64}.0.0/{prefix}", per_node


def run_node(
    i: int,
    store: EtcdStore,
    net: Network,
    per_node: int,
    block: int,
    spread: bool,
    go: threading.Barrier,
    feed: Feed,
    out: NodeResult,
) -> None:
    node = store.node or f"h{i}"
    seen = 0

    def catch_up() -> None:  # what the watch has delivered by now
        nonlocal seen
        events = feed.since(seen)
        seen += len(events)
        owners = {v: who for kind, v, who in events if kind == "block" and who != node}
        taken = [ipaddress.ip_address(v) for kind, v, who in events if kind == "taken"]
        alloc.observe(owners=owners, taken=[a for a in taken if not alloc.taken(a)])

    def view() -> tuple[dict[str, str], list[IPAddress]]:
        for attempt in range(5):  # a big read may time out while etcd is busy: back off
            try:
                taken = [ipaddress.ip_address(a) for a in store.list_allocations(net.id)]
                return store.list_blocks(net.id), taken
            except StoreError:
                out.store_errors += 1
                if attempt == 4:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    alloc = BlockAllocator(net, node, block, spread=spread)
    go.wait()
    try:
        for n in range(per_node):
            cid = f"{node}-{n}"
            taken_first = 0  # address refusals in a row (a lost block is news, not noise)
            for _ in range(1000):
                if taken_first == RESYNC_AFTER:  # keeps losing: re-read, as a resync would
                    taken_first = 0
                    out.resyncs += 1
                    alloc.set_view(*view())
                catch_up()
                addrs, cursors = alloc.allocate()
                ep = Endpoint(
                    network_id=net.id,
                    container_id=cid,
                    ifname="eth0",
                    netns=f"/run/netns/{cid}",
                    host_ifname="",
                    addresses=tuple(addrs),
                    state="creating",
                )
                claims = alloc.claims(addrs)
                try:
                    store.put_endpoint(ep, cursors, claims=claims)
                except BlockClaimed as e:  # another node won the block: note it, pick again
                    out.refreshes += 1
                    alloc.observe(owners={e.cidr: e.owner})
                    continue
                except Conflict as e:
                    out.refreshes += 1
                    if e.field == "address":  # held elsewhere: note it, as a watch would
                        taken_first += 1
                        alloc.observe(taken=[ipaddress.ip_address(e.value)])
                    else:
                        alloc.set_view(*view())
                    continue
                alloc.commit(addrs, cursors)
                feed.publish(
                    [("block", c, node) for c in claims]
                    + [("taken", str(a.ip), node) for a in addrs]
                )
                store.put_endpoint(dataclasses.replace(ep, state="ready"), {})
                out.adds += 1
                break
            else:
                out.errors.append(f"{cid}: no address after 1000 tries")
    except Exception as e:  # reported in the table, never hidden
        out.errors.append(f"{node}: {e}")


def one_run(url: str, nodes: int, per_node: int, block: int, scenario: str) -> dict[str, Any]:
    prefix = f"/netd-bench/{uuid.uuid4().hex}/"
    cidr, per_node = plan(nodes, per_node, block, scenario)
    net = overlay(cidr)
    stores = [
        EtcdStore([url], prefix=prefix, node=f"h{i}", block_prefixlen=block) for i in range(nodes)
    ]
    try:
        stores[0].create_network(net)
        for s in stores:
            s.list_networks()  # as a daemon does at start: the network record is known
        before = [(s.stats.transactions, s.stats.compare_failures) for s in stores]
        results = [NodeResult() for _ in range(nodes)]
        go = threading.Barrier(nodes + 1)
        feed = Feed()
        threads = [
            threading.Thread(
                target=run_node,
                args=(
                    i,
                    stores[i],
                    net,
                    per_node,
                    block,
                    scenario != "first",
                    go,
                    feed,
                    results[i],
                ),
            )
            for i in range(nodes)
        ]
        for th in threads:
            th.start()
        go.wait()
        started = time.perf_counter()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - started
        adds = sum(r.adds for r in results)
        txns = sum(s.stats.transactions - b[0] for s, b in zip(stores, before, strict=True))
        lost = sum(s.stats.compare_failures - b[1] for s, b in zip(stores, before, strict=True))
        # Read back, independently of what the nodes believe.
        reader = stores[0]
        allocations = reader.list_allocations(net.id)
        eps = reader.list_endpoints(net.id)
        held = [str(a.ip) for e in eps for a in e.addresses]
        duplicates = len(held) - len(set(held))
        mismatched = sum(
            allocations.get(str(a.ip)) != f"{e.container_id}/{e.ifname}"
            for e in eps
            for a in e.addresses
        ) + abs(len(allocations) - len(held))
        owners = reader.list_blocks(net.id)
        borrowed = 0
        for e in eps:
            node = e.container_id.rsplit("-", 1)[0]
            for a in e.addresses:
                blk = ipaddress.ip_network((int(a.ip) >> (32 - block) << (32 - block), block))
                if owners.get(str(blk)) != node:
                    borrowed += 1
        return {
            "scenario": scenario,
            "nodes": nodes,
            "per_node": per_node,
            "subnet": cidr,
            "block": block,
            "adds": adds,
            "seconds": elapsed,
            "adds_per_s": adds / elapsed if elapsed else None,
            "txn_per_add": txns / adds if adds else None,
            "lost_compares": lost,
            "refreshes": sum(r.refreshes for r in results),
            "resyncs": sum(r.resyncs for r in results),
            "store_errors": sum(r.store_errors for r in results),
            "blocks": len(owners),
            "borrowed": borrowed,
            "duplicates": duplicates,
            "mismatched": mismatched,
            "errors": [e for r in results for e in r.errors][:5],
        }
    finally:
        for s in stores:
            s.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", default="10,50,200", help="comma-separated node counts")
    p.add_argument("--per-node", type=int, default=50, help="ADDs per node")
    p.add_argument("--block", type=int, default=26, help="ipam_block_size (IPv4 prefix length)")
    p.add_argument("--scenarios", default="roomy,first,tight")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_cluster_ipam.py needs root (it runs etcd in a network namespace)")
    from netns_fixtures import Sandbox
    from netns_fixtures.etcd import EtcdServer, inside

    sizes = [int(n) for n in args.nodes.split(",")]
    scenarios = args.scenarios.split(",")
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="netd-bench-etcd-") as tmp,
        Sandbox(prefix=f"nbench-{os.getpid()}") as box,
    ):
        server = EtcdServer(box.add_ns("etcd"), Path(tmp) / "member").start()
        try:
            with inside(server.ns):  # threads started here inherit the sandbox namespace
                for scenario in scenarios:
                    for n in sizes:
                        run = one_run(server.url, n, args.per_node, args.block, scenario)
                        runs.append(run)
                        print(
                            f"{scenario} N={n}: {run['adds']} ADDs in {run['seconds']:.1f} s, "
                            f"dup={run['duplicates']} errors={run['errors']}",
                            flush=True,
                        )
        finally:
            server.stop()
    headers = [
        "scenario", "nodes", "ADDs/node", "subnet", "total s", "ADD/s", "etcd txn/ADD",
        "lost compares", "re-picks", "resyncs", "read retries", "blocks", "borrowed",
        "duplicates", "mismatched",
    ]  # fmt: skip
    rows = [
        [
            r["scenario"], r["nodes"], r["per_node"], r["subnet"], r["seconds"], r["adds_per_s"],
            round(r["txn_per_add"], 2), r["lost_compares"], r["refreshes"], r["resyncs"],
            r["store_errors"], r["blocks"], r["borrowed"], r["duplicates"], r["mismatched"],
        ]
        for r in runs
    ]  # fmt: skip
    print()
    print(format_table(headers, rows))
    print()
    print(machine_description())
    path = write_results("cluster_ipam", {"runs": runs, "machine": machine_description()})
    print(f"results: {path}")
    bad = [r for r in runs if r["duplicates"] or r["mismatched"] or r["errors"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
