"""`netd recover`'s pure parts and its database handling, over a canned kernel scan (no root)."""

from __future__ import annotations

import fcntl
import ipaddress
import os
from pathlib import Path

import pytest

from netd.errors import ConfigError
from netd.names import bridge_name
from netd.reconcile import recover as rec
from netd.reconcile.recover import Peer, Scan, TaggedVeth, build_records, cursors_for, parse_tag
from netd.store.sqlite import SqliteStore

NET_ID = "ab" * 32
IF = ipaddress.ip_interface


def scan() -> Scan:
    peer = Peer("/run/netns/c1", "eth0", "02:00:00:00:00:01", (IF("10.5.0.7/24"), IF("fe80::1/64")))
    return Scan(
        bridges={NET_ID: (bridge_name(NET_ID), [IF("10.5.0.1/24")])},
        veths=[
            TaggedVeth("nv1", NET_ID[:12], "eth0", "c1", "02:00:00:00:00:aa", peer),
            TaggedVeth("nv2", NET_ID[:12], "eth0", "c2", "02:00:00:00:00:bb", None),
            TaggedVeth("nv3", "f" * 12, "eth0", "c3", "02:00:00:00:00:cc", peer),
        ],
    )


def test_parse_tag() -> None:
    assert parse_tag(f"netd:{NET_ID}") == (NET_ID,)
    assert parse_tag("netd:abcdef012345:eth0:c1:x") == ("abcdef012345", "eth0", "c1:x")
    assert parse_tag("docker0") is None
    assert parse_tag("netd:a:b") is None
    assert parse_tag("netd:") is None


def test_build_records_says_what_is_lost() -> None:
    report = build_records(scan(), now=1.0)
    [net] = report.networks
    assert net.name == f"recovered-{NET_ID[:12]}" and net.options == {}
    assert [(str(s.subnet), str(s.gateway)) for s in net.subnets] == [("10.5.0.0/24", "10.5.0.1")]
    [ep] = report.endpoints
    assert (ep.container_id, ep.host_ifname, ep.mac, ep.netns) == (
        "c1",
        "nv1",
        "02:00:00:00:00:01",
        "/run/netns/c1",
    )
    assert ep.addresses == (IF("10.5.0.7/24"),) and ep.state == "ready"
    lost = "\n".join(report.lost)
    assert "c2/eth0 (host veth nv2): its namespace was not found" in lost
    assert "c3/eth0 (host veth nv3): its network's bridge is gone" in lost
    assert "DNS names" in lost and "name of network" in lost
    assert "owners of rootless networks" in lost
    assert {net.owner_uid} | {e.owner_uid for e in report.endpoints} == {0}


def test_names_and_custom_bridge() -> None:
    s = scan()
    s.bridges[NET_ID] = ("br-custom", [IF("10.5.0.1/24")])
    report = build_records(s, {NET_ID[:5]: "web"})
    assert report.networks[0].name == "web"
    assert report.networks[0].options == {"bridge": "br-custom"}
    assert not any("name of network" in x for x in report.lost)


def test_cursors_follow_the_highest_recovered_address() -> None:
    report = build_records(scan())
    assert cursors_for(report.endpoints, report.networks[0]) == {
        "10.5.0.0/24": ipaddress.ip_address("10.5.0.7")
    }


@pytest.fixture
def canned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rec, "scan_kernel", scan)


def test_corrupt_database_moved_aside_and_rebuilt(tmp_path: Path, canned: None) -> None:
    db = tmp_path / "netd.db"
    db.write_bytes(b"not a database" * 100)
    dry = rec.recover(tmp_path, dry_run=True)
    assert dry.written is None and db.read_bytes().startswith(b"not a database")
    report = rec.recover(tmp_path)
    assert report.moved_aside is not None
    assert report.moved_aside.read_bytes().startswith(b"not a database")
    assert "could not be read" in report.lost[0]
    with SqliteStore(db) as store:
        assert [n.id for n in store.list_networks()] == [NET_ID]
        assert [e.container_id for e in store.list_endpoints(NET_ID)] == ["c1"]
    assert "wrote 1 networks and 1 endpoints" in report.render()
    with pytest.raises(ConfigError, match="healthy"):
        rec.recover(tmp_path)
    forced = rec.recover(tmp_path, force=True)
    assert forced.moved_aside is not None and forced.written == db
    assert ".replaced-" in forced.moved_aside.name
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("netd.db.*")) == [
        "netd.db.corrupt",
        "netd.db.replaced",
    ]


def test_refuses_while_the_daemon_holds_its_lock(tmp_path: Path, canned: None) -> None:
    fd = os.open(tmp_path / "netd.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        with pytest.raises(ConfigError, match="pid 4242"):
            rec.recover(tmp_path)
    finally:
        os.close(fd)
    assert not (tmp_path / "netd.db").exists()
