"""The overlay under faults: an etcd member lost under load, and a partitioned node.

- Three hosts on a three-member etcd: 200 attaches in parallel across the hosts while one etcd
  member is killed (the one every node talks to first): no attach fails, no address is handed
  out twice (read back from every node and from etcd itself).
- A node partitioned away from everyone for longer than its TTL is shown down; an operator
  removes it (``netd node rm``) and its address goes to a new container elsewhere. When the
  partition heals, the node finds its endpoint gone from the cluster and withdraws it locally:
  the address lives in one container only, and the node is ready again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import Namespace, leftovers, wait_for
from netns_fixtures.cluster import Cluster
from netns_fixtures.daemon import Daemon

ATTACHES = 200


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, hosts=3, etcd_members=3).start()
    try:
        yield c
    finally:
        failures = c.close()
        assert not failures, failures
        assert not leftovers(c.prefix), leftovers(c.prefix)


def connect(d: Daemon, net: str, ns: Namespace, **extra: Any) -> tuple[int, Any]:
    return d.request("POST", f"/v1/networks/{net}/connect", {"netns": ns.path, "name": ns.name,
                                                            **extra})  # fmt: skip


def endpoints(d: Daemon, net: str) -> list[dict[str, Any]]:
    status, doc = d.request("GET", f"/v1/networks/{net}?plumbing=0")
    assert status == 200, doc
    return list(doc["endpoints"])


def test_200_parallel_attaches_while_an_etcd_member_dies(cluster: Cluster) -> None:
    daemons = [cluster.start_daemon(h) for h in cluster.hosts]
    daemons[0].cli("network", "create", "big", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    for d in daemons[1:]:
        wait_for("big everywhere", lambda d=d: "big" in d.cli("network", "ls").stdout, 5)
    containers = [cluster.sandbox.add_ns(f"k{i}") for i in range(ATTACHES)]

    def attach(i: int) -> tuple[int, Any]:
        if i == ATTACHES // 4:
            cluster.etcd[0].stop()  # the first endpoint of every node: all must fail over
        return connect(daemons[i % 3], "big", containers[i])

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(attach, range(ATTACHES)))
    failed = [(s, body) for s, body in results if s != 201]
    assert not failed, failed[:5]
    ips = [addr for _, body in results for addr in body["addresses"]]
    assert len(ips) == ATTACHES and len(set(ips)) == ATTACHES, Counter(ips).most_common(3)
    # Every node sees the same 200 endpoints; etcd holds exactly one holder per address.
    for d in daemons:
        wait_for("all 200 on every node", lambda d=d: len(endpoints(d, "big")) == ATTACHES, 10)
    seen = Counter(a for e in endpoints(daemons[2], "big") for a in e["addresses"])
    assert max(seen.values()) == 1
    held = cluster.etcd[1].keys("/netd/allocations/")
    assert len(held) == ATTACHES and len(set(held.values())) == ATTACHES
    # Each host's kernel has its own containers, addressed as recorded.
    for i in (0, 1, 2, 199):
        addr = results[i][1]["addresses"][0].split("/")[0]
        assert any(a.startswith(addr + "/") for a in containers[i].addresses("eth0"))


def test_a_partitioned_node_comes_back_without_a_duplicate_address(cluster: Cluster) -> None:
    settings = {"cluster": {"node_ttl": 2}}
    d1, _, d3 = (cluster.start_daemon(h, settings=settings) for h in cluster.hosts)
    d1.cli("network", "create", "ov", "--driver", "overlay", "--subnet", "10.81.0.0/24")
    wait_for("ov on h3", lambda: "ov" in d3.cli("network", "ls").stdout, 5)
    c3 = cluster.sandbox.add_ns("c3")
    status, ep = connect(d3, "ov", c3)
    assert status == 201, ep
    a3 = ep["addresses"][0].split("/")[0]

    cluster.partition("h3")
    wait_for("h3 down", lambda: nodes(d1)["h3"]["state"] == "down", 15)
    d1.cli("node", "rm", "h3")
    c9 = cluster.sandbox.add_ns("c9")
    status, ep = connect(d1, "ov", c9, ips=[a3])  # the operator reuses the freed address
    assert status == 201, ep

    cluster.heal("h3")
    wait_for("h3 ready again", lambda: nodes(d1).get("h3", {}).get("state") == "ready", 15)
    # h3 learns that its endpoint is no longer in the cluster and withdraws it.
    wait_for("c3 withdrawn on h3", lambda: not [e for e in endpoints(d3, "ov")
                                                if e["node"] == "h3"], 15)  # fmt: skip
    wait_for("c3's interface gone", lambda: "eth0" not in c3.links(), 5)
    holders = [e["name"] for e in endpoints(d3, "ov") if any(a.startswith(a3 + "/")
                                                              for a in e["addresses"])]  # fmt: skip
    assert holders == [c9.name]
    assert [a.split("/")[0] for a in c9.addresses("eth0")] == [a3]


def nodes(d: Daemon) -> dict[str, dict[str, Any]]:
    out = d.cli("node", "ls", "--format", "json").stdout
    return {n["name"]: n for n in json.loads(out)}


def test_a_node_down_longer_than_its_grace_is_freed_by_the_others(cluster: Cluster) -> None:
    settings = {"cluster": {"node_ttl": 2, "node_grace": 4}}
    d1, _, d3 = (cluster.start_daemon(h, settings=settings) for h in cluster.hosts)
    d1.cli("network", "create", "ov", "--driver", "overlay", "--subnet", "10.82.0.0/24")
    wait_for("ov on h3", lambda: "ov" in d3.cli("network", "ls").stdout, 5)
    status, ep = connect(d3, "ov", cluster.sandbox.add_ns("c3"))
    assert status == 201, ep
    shown = nodes(d1)["h3"]
    assert shown["endpoints"] == 1 and len(shown["blocks"]) == 1
    cluster.kill_host("h3")
    wait_for("h3 down", lambda: nodes(d1)["h3"]["state"] == "down", 15)
    # Nobody runs `node rm`: after the grace the live nodes free its endpoint and blocks, and
    # keep its record (an operator still sees it, down).
    wait_for("h3 freed", lambda: nodes(d1)["h3"]["endpoints"] == 0, 30)
    assert nodes(d1)["h3"]["blocks"] == [] and nodes(d1)["h3"]["state"] == "down"
    assert cluster.etcd[0].keys("/netd/allocations/") == {}
