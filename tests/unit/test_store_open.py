"""Opening the SQLite store: creation, durability, migration, refusal of corrupt files, factory."""

from __future__ import annotations

import ast
import ipaddress
import json
import logging
import os
import random
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from kit import endpoint, network

import netd
from netd.errors import ConfigError, Conflict, StoreCorrupt, StoreError
from netd.model import Endpoint, Network, to_json
from netd.store import open_store
from netd.store.migrations import APPLICATION_ID, LATEST_VERSION
from netd.store.sqlite import SqliteStore

NET_ID = "a" * 64


def make_network() -> Network:
    return network("front", ["10.88.0.0/24", "fd00:88::/64"], id=NET_ID, labels={"tier": "web"})


def make_endpoint(cid: str, *addrs: str) -> Endpoint:
    return endpoint(make_network(), cid, ip=addrs, host_ifname=f"nv{cid}")


def run_child(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a second process on the same database)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# --- creation and durability ---------------------------------------------------------------


def test_fresh_database_is_wal_private_and_current(tmp_path: Path) -> None:
    path = tmp_path / "netd.db"
    with SqliteStore(path) as s:
        assert s.schema_version == LATEST_VERSION
        assert s.list_networks() == []
        conn = s._conn  # the live connection's per-connection settings
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        for name in ("netd.db-wal", "netd.db-shm"):  # SQLite copies the main file's mode
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    header = path.read_bytes()[:100]
    assert header[18] == header[19] == 2  # file format 2 = WAL (sqlite fileformat.html)
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID
    assert int.from_bytes(header[60:64], "big") == LATEST_VERSION
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netd.db"]  # no temp file left


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "netd.db"
    with SqliteStore(path) as s:
        s.create_network(make_network())
        s.put_endpoint(
            make_endpoint("a", "10.88.0.2/24", "fd00:88::2/64"),
            {"10.88.0.0/24": ipaddress.ip_address("10.88.0.2")},
        )
    with SqliteStore(path) as s:
        assert s.list_networks() == [make_network()]
        assert s.list_endpoints() == [make_endpoint("a", "10.88.0.2/24", "fd00:88::2/64")]
        assert s.get_cursors(NET_ID) == {"10.88.0.0/24": ipaddress.ip_address("10.88.0.2")}
        with pytest.raises(Conflict, match="container a interface eth0"):
            s.put_endpoint(make_endpoint("b", "fd00:88::2/64"), {})


def test_commit_that_returned_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "netd.db"
    child = run_child(
        f"""
        import ipaddress, os, signal
        from pathlib import Path
        from netd.model import Endpoint, Network, Subnet
        from netd.store.sqlite import SqliteStore
        s = SqliteStore(Path({str(path)!r}))
        s.create_network(Network(id={NET_ID!r}, name="front", driver="bridge", subnets=(
            Subnet(ipaddress.ip_network("10.88.0.0/24"), ipaddress.ip_address("10.88.0.1")),)))
        s.put_endpoint(Endpoint(network_id={NET_ID!r}, container_id="a", ifname="eth0",
            netns="/run/netns/a", host_ifname="nva",
            addresses=(ipaddress.ip_interface("10.88.0.2/24"),), state="ready"), {{}})
        os.kill(os.getpid(), signal.SIGKILL)  # no close(): the WAL is never checkpointed
        """
    )
    assert child.returncode == -9, child.stderr
    assert (tmp_path / "netd.db-wal").stat().st_size > 0  # the data lives only in the WAL
    with SqliteStore(path) as s:
        assert [e.key for e in s.list_endpoints()] == [("a", "eth0")]


def test_endpoint_writes_skip_fsync_and_restore_full(tmp_path: Path) -> None:
    # Endpoint commits use synchronous=NORMAL (docs/store.md); everything else stays FULL,
    # also after an endpoint write that failed.
    seen: list[int] = []
    with SqliteStore(tmp_path / "netd.db") as s:
        s.create_network(make_network())
        s._conn.set_trace_callback(
            lambda sql: seen.append(0 if "NORMAL" in sql else 2) if "synchronous" in sql else None
        )
        s.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {})
        with pytest.raises(Conflict):
            s.put_endpoint(make_endpoint("b", "10.88.0.2/24"), {})
        assert s.delete_endpoint(NET_ID, "a", "eth0")
        assert seen == [0, 2] * 3
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_kill_inside_a_transaction_leaves_the_previous_state(tmp_path: Path) -> None:
    path = tmp_path / "netd.db"
    with SqliteStore(path) as s:
        s.create_network(make_network())
        s.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {})
        before = (s.list_endpoints(), s.get_cursors(NET_ID))
    child = run_child(
        f"""
        import ipaddress
        from pathlib import Path
        from netd.model import Endpoint
        from netd.store.sqlite import SqliteStore
        s = SqliteStore(Path({str(path)!r}))
        s.put_endpoint(Endpoint(network_id={NET_ID!r}, container_id="a", ifname="eth0",
            netns="/run/netns/a", host_ifname="nva",
            addresses=(ipaddress.ip_interface("10.88.0.9/24"),), state="ready"),
            {{"10.88.0.0/24": ipaddress.ip_address("10.88.0.9")}})
        """,
        env={"NETD_FAULTS": "store.put_endpoint=kill"},
    )
    assert child.returncode == -9, child.stderr
    with SqliteStore(path) as s:
        assert (s.list_endpoints(), s.get_cursors(NET_ID)) == before


def test_second_process_shares_the_open_database(tmp_path: Path) -> None:
    path = tmp_path / "netd.db"
    with SqliteStore(path) as s:
        s.create_network(make_network())
        s.put_endpoint(make_endpoint("a", "10.88.0.2/24"), {})
        child = run_child(
            f"""
            import ipaddress
            from pathlib import Path
            from netd.errors import Conflict
            from netd.model import Endpoint
            from netd.store.sqlite import SqliteStore
            def ep(cid, addr):
                return Endpoint(network_id={NET_ID!r}, container_id=cid, ifname="eth0",
                    netns="/run/netns/" + cid, host_ifname="nv" + cid,
                    addresses=(ipaddress.ip_interface(addr),), state="ready")
            with SqliteStore(Path({str(path)!r})) as s:
                print([e.container_id for e in s.list_endpoints()])
                try:
                    s.put_endpoint(ep("x", "10.88.0.2/24"), {{}})
                except Conflict as e:
                    print("conflict:", e.message)
                s.put_endpoint(ep("b", "10.88.0.3/24"), {{}})
            """
        )
        assert child.returncode == 0, child.stderr
        lines = child.stdout.splitlines()
        assert lines[0] == "['a']"
        assert lines[1].startswith("conflict:") and "container a interface eth0" in lines[1]
        # Seen by the first process without reopening.
        assert [e.container_id for e in s.list_endpoints()] == ["a", "b"]


# --- migration -----------------------------------------------------------------------------

# The schema as version 1 shipped it, frozen here: a database written by that netd.
V1_SCHEMA = """
CREATE TABLE networks (id TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL, doc TEXT NOT NULL CHECK (json_valid(doc))) STRICT;
CREATE TABLE endpoints (network_id TEXT NOT NULL REFERENCES networks (id),
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, doc TEXT NOT NULL CHECK (json_valid(doc)),
    PRIMARY KEY (network_id, container_id, ifname)) STRICT;
CREATE TABLE allocations (network_id TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, PRIMARY KEY (network_id, address),
    FOREIGN KEY (network_id, container_id, ifname)
        REFERENCES endpoints (network_id, container_id, ifname) ON DELETE CASCADE) STRICT;
"""


def write_v1_database(path: Path, extra_sql: str = "") -> None:
    net, ep = make_network(), make_endpoint("a", "10.88.0.2/24", "fd00:88::2/64")
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA + extra_sql)
    conn.execute(
        "INSERT INTO networks VALUES (?, ?, ?, ?)",
        (net.id, net.name, net.created, json.dumps(to_json(net))),
    )
    conn.execute(
        "INSERT INTO endpoints VALUES (?, ?, ?, ?)", (NET_ID, "a", "eth0", json.dumps(to_json(ep)))
    )
    conn.executemany(
        "INSERT INTO allocations VALUES (?, ?, 'a', 'eth0')",
        [(NET_ID, "10.88.0.2"), (NET_ID, "fd00:88::2")],
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_v1_database_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "netd.db"
    write_v1_database(path)
    with SqliteStore(path) as s:
        assert s.schema_version == LATEST_VERSION == 2
        assert s.list_networks() == [make_network()]
        assert s.list_endpoints() == [make_endpoint("a", "10.88.0.2/24", "fd00:88::2/64")]
        assert s.get_cursors(NET_ID) == {}
        with pytest.raises(Conflict, match="container a interface eth0"):
            s.put_endpoint(make_endpoint("b", "10.88.0.2/24"), {})
        s.put_endpoint(
            make_endpoint("b", "10.88.0.3/24"), {"10.88.0.0/24": ipaddress.ip_address("10.88.0.3")}
        )
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "allocations_by_holder" in indexes
    conn.close()


def test_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "netd.db"
    # A stray table in the way of migration 2's CREATE TABLE cursors.
    write_v1_database(path, "CREATE TABLE cursors (x TEXT);")
    with pytest.raises(StoreError, match="migrating from schema version 1") as err:
        SqliteStore(path)
    assert str(path) in err.value.message
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "allocations_by_holder" not in indexes  # statement 2 of the migration did not stick
    conn.close()


# --- files that must be refused ------------------------------------------------------------


def foreign_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, blob BLOB)")
    conn.execute("INSERT INTO photos (blob) VALUES (x'00ff')")
    conn.commit()
    conn.close()


def future_db(path: Path) -> None:
    write_v1_database(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.commit()
    conn.close()


def netd_db_bytes(tmp_path: Path) -> bytes:
    src = tmp_path / "good.db"
    with SqliteStore(src) as s:
        s.create_network(make_network())
        for i in range(40):
            s.put_endpoint(make_endpoint(f"c{i}" * 30, f"10.88.0.{i + 2}/24"), {})
    return src.read_bytes()


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(16384))


def torn_page(path: Path) -> None:
    # Keep the header and schema page; scribble over a b-tree page in the middle.
    data = bytearray(netd_db_bytes(path.parent))
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page * 3 : page * 3 + 200] = random.Random(3).randbytes(200)
    path.write_bytes(bytes(data))


def missing_tables(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE networks (id TEXT)")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"SQLite format 3\0" + b"\0" * 40), "too short"),
        (random_bytes, "is unreadable"),
        (foreign_db, "is not a netd database"),
        (future_db, f"schema version {LATEST_VERSION + 1}, newer than"),
        (torn_page, "integrity check|unreadable"),
        (missing_tables, "lacks tables"),
    ],
    ids=["empty", "tiny", "random-bytes", "foreign-sqlite", "future-version", "torn", "no-tables"],
)
def test_unusable_file_is_refused_and_left_untouched(
    tmp_path: Path, make: Callable[[Path], object], expected: str
) -> None:
    path = tmp_path / "netd.db"
    make(path)
    original = path.read_bytes()
    with pytest.raises(StoreCorrupt, match=expected) as err:
        SqliteStore(path)
    assert str(path) in err.value.message
    assert path.read_bytes() == original
    assert not (tmp_path / "netd.db-wal").exists()


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.9])
def test_truncated_file_is_refused(tmp_path: Path, fraction: float) -> None:
    data = netd_db_bytes(tmp_path)
    path = tmp_path / "netd.db"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(StoreCorrupt) as err:
        SqliteStore(path)
    assert str(path) in err.value.message
    assert len(path.read_bytes()) == int(len(data) * fraction)


# --- factory and boundaries ----------------------------------------------------------------


def test_open_store_sqlite_creates_private_state_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state" / "netd"
    with caplog.at_level(logging.INFO, logger="netd.store"):
        store = open_store("sqlite", state)
    try:
        store.create_network(make_network())
        assert store.list_networks() == [make_network()]
    finally:
        store.close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (state / "netd.db").is_file()
    assert any(f"state store: sqlite at {state / 'netd.db'}" in r.message for r in caplog.records)


def test_open_store_etcd_is_not_implemented_yet(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='"etcd" is not implemented yet'):
        open_store("etcd", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_open_store_unknown_kind_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown state store 'mysql'") as err:
        open_store("mysql", tmp_path)
    assert err.value.field == "store"


def imports_sqlite3(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name == "sqlite3" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            return True
    return False


def test_only_the_store_package_imports_sqlite3() -> None:
    package = Path(netd.__file__).parent
    offenders = [
        str(p.relative_to(package))
        for p in sorted(package.rglob("*.py"))
        if p.parent != package / "store" and imports_sqlite3(p.read_text())
    ]
    assert offenders == []
