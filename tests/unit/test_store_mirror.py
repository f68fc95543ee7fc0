"""The recovery copy: what MirroredStore writes after each commit, and what read_copy gives back."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_records import NET_ID, OTHER_ID, make_endpoint, make_network

from netd.errors import Conflict, StoreCorrupt
from netd.store.mirror import (
    NETWORK_STEM,
    CopyWriter,
    MirroredStore,
    decode,
    encode,
    endpoint_stem,
    read_copy,
)
from netd.store.sqlite import SqliteStore


@pytest.fixture
def copy_dir(tmp_path: Path) -> Path:
    return tmp_path / "elsewhere" / "recovery"


@pytest.fixture
def store(tmp_path: Path, copy_dir: Path) -> Iterator[MirroredStore]:
    s = MirroredStore(SqliteStore(tmp_path / "netd.db"), CopyWriter(copy_dir))
    s.sync()
    yield s
    s.close()


def files(copy_dir: Path, net_id: str, stem: str) -> list[Path]:
    """The versions of one record's file, oldest first."""
    return sorted(
        (copy_dir / net_id).glob(f"{stem}.*.json"), key=lambda p: int(p.name.split(".")[1])
    )


def one(copy_dir: Path, net_id: str, stem: str) -> Path:
    [path] = files(copy_dir, net_id, stem)
    return path


def same_as_store(s: MirroredStore, copy_dir: Path) -> None:
    """The copy holds exactly the store's records."""
    copy = read_copy(copy_dir)
    assert copy.problems == []
    assert list(copy.networks.values()) == s.list_networks()
    for net in s.list_networks():
        assert sorted(copy.endpoints[net.id], key=lambda e: e.key) == sorted(
            s.list_endpoints(net.id), key=lambda e: e.key
        )


def test_every_change_reaches_the_copy(store: MirroredStore, copy_dir: Path) -> None:
    store.create_network(make_network())
    store.create_network(make_network(OTHER_ID, "back"))
    store.put_endpoint(
        dataclasses.replace(make_endpoint("c1", "10.88.0.2/24"), state="creating"), {}
    )
    store.put_endpoint(make_endpoint("c1", "10.88.0.2/24"), {})
    store.put_endpoint(make_endpoint("c2", "10.88.0.3/24", ifname="eth1"), {})
    same_as_store(store, copy_dir)
    assert read_copy(copy_dir).endpoints[NET_ID][0].state == "ready"
    assert store.delete_endpoint(NET_ID, "c1", "eth0")
    assert files(copy_dir, NET_ID, endpoint_stem("c1", "eth0")) == []
    store.delete_endpoint(NET_ID, "c2", "eth1")
    store.delete_network(NET_ID)
    assert not (copy_dir / NET_ID).exists()
    same_as_store(store, copy_dir)
    assert sorted(p.name for p in copy_dir.iterdir()) == [OTHER_ID]  # no temporary leftovers


def test_a_refused_write_changes_no_copy(store: MirroredStore, copy_dir: Path) -> None:
    store.create_network(make_network())
    before = one(copy_dir, NET_ID, NETWORK_STEM).read_bytes()
    with pytest.raises(Conflict):
        store.create_network(make_network())
    store.put_endpoint(make_endpoint("c1", "10.88.0.2/24"), {})
    with pytest.raises(Conflict):
        store.put_endpoint(make_endpoint("c2", "10.88.0.2/24"), {})
    assert files(copy_dir, NET_ID, endpoint_stem("c2", "eth0")) == []
    assert one(copy_dir, NET_ID, NETWORK_STEM).read_bytes() == before


def test_files_are_private_and_checksummed(store: MirroredStore, copy_dir: Path) -> None:
    store.create_network(make_network())
    path = one(copy_dir, NET_ID, NETWORK_STEM)
    assert path.stat().st_mode & 0o777 == 0o600 and copy_dir.stat().st_mode & 0o777 == 0o700
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and doc["kind"] == "network" and doc["record"]["name"] == "front"
    doc["record"]["name"] = "tampered"
    with pytest.raises(ValueError, match="checksum mismatch"):
        decode(json.dumps(doc).encode(), "network")
    with pytest.raises(ValueError, match="expected 'endpoint'"):
        decode(path.read_bytes(), "endpoint")
    with pytest.raises(ValueError, match="not JSON"):
        decode(path.read_bytes()[:40], "network")
    with pytest.raises(ValueError, match="unknown format 2"):
        decode(encode("network", make_network(), 1).replace(b'"format":1', b'"format":2'), "x")


def test_a_failed_copy_write_is_logged_and_repaired_at_the_next_change(
    store: MirroredStore, copy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.create_network(make_network())
    shutil.rmtree(copy_dir / NET_ID)
    (copy_dir / NET_ID).write_text("in the way")  # the network's directory cannot be used
    with caplog.at_level(logging.ERROR):
        store.put_endpoint(make_endpoint("c1", "10.88.0.2/24"), {})  # committed all the same
    assert "recovery copy: writing endpoint" in caplog.text
    assert [e.container_id for e in store.list_endpoints()] == ["c1"]
    (copy_dir / NET_ID).unlink()
    store.put_endpoint(make_endpoint("c2", "10.88.0.3/24"), {})
    same_as_store(store, copy_dir)  # the whole network was rewritten, c1 included


def test_start_up_sync_rewrites_only_what_differs(tmp_path: Path, copy_dir: Path) -> None:
    with MirroredStore(SqliteStore(tmp_path / "netd.db"), CopyWriter(copy_dir)) as s:
        s.sync()
        s.create_network(make_network())
        s.put_endpoint(make_endpoint("c1", "10.88.0.2/24"), {})
    # A copy one commit behind (a crash between commit and copy write), a stale record, junk.
    one(copy_dir, NET_ID, endpoint_stem("c1", "eth0")).unlink()
    stale = CopyWriter(copy_dir)
    stale.write_network(make_network(OTHER_ID, "gone"))
    stale.write_endpoint(make_endpoint("old", "10.88.0.9/24"))
    (copy_dir / NET_ID / ".x.tmp").write_text("half")
    # The network's newest version cut short (a crash mid-write), the previous one whole.
    good = one(copy_dir, NET_ID, NETWORK_STEM)
    revision = int(good.name.split(".")[1]) + 1
    (copy_dir / NET_ID / f"{NETWORK_STEM}.{revision}.json").write_bytes(good.read_bytes()[:50])
    with MirroredStore(SqliteStore(tmp_path / "netd.db"), CopyWriter(copy_dir)) as s:
        # c1 written; "old", the temp file, the cut version and network "gone" removed
        assert s.sync() == 5
        same_as_store(s, copy_dir)
        assert one(copy_dir, NET_ID, NETWORK_STEM) == good
        assert s.sync() == 0


def test_a_new_database_beside_a_full_copy_is_refused(tmp_path: Path, copy_dir: Path) -> None:
    CopyWriter(copy_dir).write_network(make_network())
    s = MirroredStore(SqliteStore(tmp_path / "netd.db"), CopyWriter(copy_dir))
    try:
        with pytest.raises(StoreCorrupt, match=r"the database was probably lost.*netd recover"):
            s.sync()
        assert read_copy(copy_dir).networks  # untouched
    finally:
        s.close()


def test_read_copy_names_what_it_cannot_read(tmp_path: Path, copy_dir: Path) -> None:
    assert read_copy(copy_dir).problems == [f"no recovery copy at {copy_dir}"]
    w = CopyWriter(copy_dir)
    w.write_network(make_network())
    w.write_network(make_network(OTHER_ID, "back"))
    w.write_endpoint(make_endpoint("c1", "10.88.0.2/24"))
    w.write_endpoint(make_endpoint("c2", "10.88.0.3/24"))
    one(copy_dir, OTHER_ID, NETWORK_STEM).write_bytes(b"")
    one(copy_dir, NET_ID, endpoint_stem("c2", "eth0")).write_bytes(b"{")
    shutil.copy(
        one(copy_dir, NET_ID, endpoint_stem("c1", "eth0")),
        copy_dir / NET_ID / f"{endpoint_stem('c9', 'eth0')}.7.json",
    )
    copy = read_copy(copy_dir)
    assert list(copy.networks) == [NET_ID]
    assert [e.container_id for e in copy.endpoints[NET_ID]] == ["c1"]
    problems = "\n".join(copy.problems)
    assert f"copy of network {OTHER_ID[:12]}" in problems and "not JSON" in problems
    assert "holds another endpoint's record" in problems
    assert len(copy.problems) == 3


def test_the_newest_readable_revision_wins(tmp_path: Path, copy_dir: Path) -> None:
    w = CopyWriter(copy_dir)
    w.write_network(make_network())
    stem = endpoint_stem("c1", "eth0")
    w.write_endpoint(make_endpoint("c1", "10.88.0.2/24"))
    first = one(copy_dir, NET_ID, stem)
    w.write_endpoint(make_endpoint("c1", "10.88.0.3/24"))
    second = one(copy_dir, NET_ID, stem)  # the older revision was unlinked
    assert first != second and int(second.name.split(".")[1]) > int(first.name.split(".")[1])
    # A crash between writing a new version and unlinking the old one leaves both.
    revision = int(first.name.split(".")[1])
    first.write_bytes(encode("endpoint", make_endpoint("c1", "10.88.0.2/24"), revision))
    [ep] = read_copy(copy_dir).endpoints[NET_ID]
    assert str(ep.addresses[0]) == "10.88.0.3/24"
    # The newest damaged (a power loss before it reached the disk): the older one is used.
    first.unlink()
    older = copy_dir / NET_ID / f"{stem}.5.json"
    older.write_bytes(encode("endpoint", make_endpoint("c1", "10.88.0.2/24"), 5))
    newest = files(copy_dir, NET_ID, stem)[-1]
    newest.write_bytes(b"")
    copy = read_copy(copy_dir)
    [ep] = copy.endpoints[NET_ID]
    assert str(ep.addresses[0]) == "10.88.0.2/24"
    assert len(copy.problems) == 1 and "used the older revision 5" in copy.problems[0]
