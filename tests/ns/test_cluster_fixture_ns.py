"""The multi-host fixture itself (netns_fixtures.cluster): what the issue-16 tests stand on.

Three hosts and a three-member etcd cluster on one underlay bridge: every member reaches every
other over plain IP, etcd is healthy with three members and keeps taking writes (netd's own
EtcdStore, from a host namespace) with one member killed or paused, partitions stop traffic
and healing restores it, netd daemons can be SIGKILLed and restarted on their state, a host
can be killed outright, and closing leaves no namespace and no process.
"""

from __future__ import annotations

import json
import os
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import network
from netns_fixtures import leftovers, wait_for
from netns_fixtures.cluster import BRIDGE, UPLINK, Cluster, Member
from netns_fixtures.etcd import EtcdServer, inside

from netd.store.etcd import EtcdStore


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 hosts and 3 etcd members, shared by the tests that leave it as they found it."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), hosts=3, etcd_members=3)
    try:
        yield c.start()
    finally:
        failures = c.close()
        assert not failures, failures
        assert not leftovers(c.prefix), leftovers(c.prefix)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pid_state(pid: int) -> str:
    """The one-letter state of ``pid`` from /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def reaches(a: Member, b: Member) -> bool:
    return a.ns.ping(b.address, count=1, timeout=1)


def member_list(server: EtcdServer) -> list[str]:
    """Member names etcd reports (grpc-gateway's cluster API, read with curl)."""
    out = server.ns.run(*server.curl_argv("/v3/cluster/member/list", "-d", "{}"))
    return sorted(m.get("name", "") for m in json.loads(out)["members"])


def wait_quorum(c: Cluster, servers: list[EtcdServer]) -> None:
    for s in servers:
        wait_for(f"etcd member {s.name} healthy", s.healthy, 30, step=0.2)


@pytest.fixture
def prefix() -> str:
    return f"/netd-test/{uuid.uuid4().hex}/"


def test_every_member_reaches_every_other_over_the_underlay(cluster: Cluster) -> None:
    members = cluster.members()
    assert [m.name for m in members] == ["etcd1", "etcd2", "etcd3", "h1", "h2", "h3"]
    for m in members:
        # Independent read-back: the address sits on the uplink, the port on the bridge.
        assert m.ns.addresses(UPLINK) == [f"{m.address}/24"]
        port = cluster.underlay.links()[m.port]  # type: ignore[union-attr]
        assert port.get("master") == BRIDGE
    unreachable = [(a.name, b.name) for a in members for b in members if a is not b
                   if not reaches(a, b)]  # fmt: skip
    assert unreachable == []


def test_etcd_cluster_is_three_healthy_members_on_the_underlay(cluster: Cluster) -> None:
    assert cluster.etcd_endpoints == [
        "http://10.251.0.11:2379",
        "http://10.251.0.12:2379",
        "http://10.251.0.13:2379",
    ]
    for server in cluster.etcd:
        assert server.healthy()
        assert member_list(server) == ["etcd1", "etcd2", "etcd3"]
    # A host reaches etcd's client port over the underlay (not only ping).
    h1 = cluster.host("h1")
    assert h1.ns.ok("curl", "-sf", "--max-time", "3", f"{cluster.etcd_endpoints[1]}/health")


def test_writes_from_a_host_survive_losing_one_member(cluster: Cluster, prefix: str) -> None:
    h1 = cluster.host("h1")
    first, second, third = cluster.etcd
    with inside(h1.ns):
        store = EtcdStore(cluster.etcd_endpoints, prefix=prefix)
        try:
            store.create_network(network("before", "10.251.64.0/24"))
            first.stop()  # SIGKILL by PID; the first endpoint the store tries is now dead
            assert not pid_alive(first.proc.pid)  # type: ignore[union-attr]
            wait_quorum(cluster, [second, third])
            store.create_network(network("during", "10.251.65.0/24"))
            assert sorted(n.name for n in store.list_networks()) == ["before", "during"]
        finally:
            store.close()
    assert set(third.keys(prefix)) >= {f"{prefix}network-names/during"}
    first.start()  # back on its data dir, rejoins
    wait_quorum(cluster, cluster.etcd)
    wait_for(
        "the restarted member caught up",
        lambda: f"{prefix}network-names/during" in first.keys(prefix, local=True),
        30,
        step=0.2,
    )
    assert member_list(first) == ["etcd1", "etcd2", "etcd3"]


def test_a_paused_member_is_skipped_and_catches_up_on_resume(cluster: Cluster, prefix: str) -> None:
    paused, *rest = cluster.etcd[1], cluster.etcd[0], cluster.etcd[2]
    paused.pause()
    try:
        assert pid_state(paused.proc.pid) == "T"  # type: ignore[union-attr]
        assert not paused.healthy()  # accepts the connection, never answers
        wait_quorum(cluster, rest)
        with inside(cluster.host("h2").ns):
            store = EtcdStore([s.url for s in rest], prefix=prefix)
            try:
                store.create_network(network("while-paused", "10.251.66.0/24"))
            finally:
                store.close()
    finally:
        paused.resume()
    assert pid_state(paused.proc.pid) != "T"  # type: ignore[union-attr]
    wait_quorum(cluster, cluster.etcd)
    wait_for(
        "the resumed member caught up",
        lambda: f"{prefix}network-names/while-paused" in paused.keys(prefix, local=True),
        30,
        step=0.2,
    )


@pytest.mark.parametrize("how", ["drop", "link"])
def test_partition_stops_traffic_and_heal_restores_it(cluster: Cluster, how: str) -> None:
    h1, h2, h3 = cluster.hosts
    etcd1 = cluster.etcd_nodes[0]
    cluster.partition(h1, how=how)  # type: ignore[arg-type]
    try:
        for other in (h2, h3, etcd1):
            assert not reaches(h1, other), f"{h1.name} still reaches {other.name}"
            assert not reaches(other, h1), f"{other.name} still reaches {h1.name}"
        assert reaches(h2, h3) and reaches(h3, etcd1)  # the rest of the cluster is untouched
        flags = h1.ns.links()[UPLINK]["flags"]
        if how == "drop":
            # A switch dropping frames: the host's link looks perfectly fine.
            assert "LOWER_UP" in flags
            assert h1.ns.ok("true")
        else:
            assert "NO-CARRIER" in flags
    finally:
        cluster.heal(h1)
    for other in (h2, h3, etcd1):
        wait_for(f"{h1.name} reaches {other.name} again", lambda o=other: reaches(h1, o), 10)
        assert reaches(other, h1)
    table = cluster.underlay.run("nft", "list", "table", "bridge", "ntest_partition")  # type: ignore[union-attr]
    assert " drop" not in table


def test_partial_partition_cuts_only_the_named_peers(cluster: Cluster) -> None:
    h1, h2, h3 = cluster.hosts
    etcd2 = cluster.etcd_nodes[1]
    cluster.partition("h1", peers=["h2", "etcd2"])
    try:
        assert not reaches(h1, h2) and not reaches(h2, h1)
        assert not reaches(h1, etcd2)
        assert reaches(h1, h3) and reaches(h3, h2) and reaches(h2, etcd2)
    finally:
        cluster.heal()
    wait_for("h1 reaches h2 again", lambda: reaches(h1, h2), 10)
    wait_for("h1 reaches etcd2 again", lambda: reaches(h1, etcd2), 10)


def test_daemons_start_crash_restart_and_hosts_die_outright(tmp_path: Path) -> None:
    c = Cluster(tmp_path, hosts=3, etcd_members=1)
    try:
        c.start()
        h1, h2, h3 = c.hosts
        # The cluster config a host's daemon gets (netd reads it once the cluster core lands).
        cfg = c.daemon_settings("h2", settings={"cluster": {"node_ttl": 5}, "dns_workers": 2})
        assert cfg == {
            "store": "etcd",
            "cluster": {
                "etcd_endpoints": ["http://10.251.0.11:2379"],
                "node_name": "h2",
                "node_address": "10.251.0.2",
                "node_ttl": 5,
            },
            "dns_workers": 2,
        }
        # Today's netd runs single-host: start it plain, with settings written as TOML.
        d = c.start_daemon("h1", cluster=False, settings={"reconcile_interval": 0.5})
        assert tomllib.loads(d.config_path().read_text()) == {"reconcile_interval": 0.5}
        d.cli("network", "create", "kept", "--subnet", "10.251.128.0/24")
        pid = d.proc.pid  # type: ignore[union-attr]
        c.kill_daemon("h1")
        assert not pid_alive(pid)
        d = c.restart_daemon("h1")
        assert d.proc.pid != pid  # type: ignore[union-attr]
        assert "kept" in d.cli("network", "ls").stdout  # the same state dir

        d3 = c.start_daemon("h3", cluster=False)
        pid3 = d3.proc.pid  # type: ignore[union-attr]
        c.kill_host("h3")
        assert not pid_alive(pid3)
        assert not os.path.exists(h3.ns.path)
        assert h3.port not in c.underlay.links()  # type: ignore[union-attr]
        assert [m.name for m in c.members()] == ["etcd1", "h1", "h2"]
        assert reaches(h1, h2) and not h2.ns.ping(h3.address, timeout=1)
        with pytest.raises(RuntimeError, match="host h3 was killed"):
            c.restart_daemon("h3")
        with pytest.raises(RuntimeError, match="host h3 was killed"):
            c.partition("h3")
        c.heal()  # the living only
        etcd_pid = c.etcd[0].proc.pid  # type: ignore[union-attr]
        daemon_pid = d.proc.pid  # type: ignore[union-attr]
    finally:
        failures = c.close()
    assert not failures, failures
    assert not leftovers(c.prefix), leftovers(c.prefix)
    assert not pid_alive(etcd_pid) and not pid_alive(daemon_pid)
