"""The SQLite schema of netd's state store, as an ordered ladder of migrations.

The schema version lives in ``PRAGMA user_version``; migration *n* takes a database from
version *n - 1* to *n*. ``PRAGMA application_id`` marks the file as netd's, so a foreign SQLite
database is refused instead of being "migrated" into ours. All pending migrations run inside the
caller's transaction, so a crash leaves the database at its old version, never half-migrated.

This module only knows the schema. Opening the file, checking its integrity and the store
operations live in :mod:`netd.store.sqlite_file` and :mod:`netd.store.sqlite`.

Policy: a migration that has shipped is never edited; a change is a new migration appended to
:data:`MIGRATIONS`. Migrations only move forward; a database newer than this code is refused.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..errors import StoreError

# "netd" in ASCII, written at offset 68 of the database header (see SQLite's magic.txt).
APPLICATION_ID = 0x6E657464


@dataclass(frozen=True)
class Migration:
    """One step of the schema ladder: the version it produces and the statements to get there."""

    version: int
    summary: str
    creates: frozenset[str]  # tables this step adds; what a database at `version` must hold
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        summary="networks, endpoints and address allocations",
        creates=frozenset({"networks", "endpoints", "allocations"}),
        statements=(
            # A network's record is a JSON document (netd.model.to_json) so that an etcd store
            # can keep the very same bytes; only what SQLite must enforce or sort by is a column.
            """
            CREATE TABLE networks (
                id      TEXT NOT NULL PRIMARY KEY,
                name    TEXT NOT NULL UNIQUE,
                created REAL NOT NULL,
                doc     TEXT NOT NULL CHECK (json_valid(doc))
            ) STRICT
            """,
            # No ON DELETE CASCADE from networks: deleting a network that still has endpoints
            # must fail, and the foreign key makes that true even if a caller skips the check.
            """
            CREATE TABLE endpoints (
                network_id   TEXT NOT NULL REFERENCES networks (id),
                container_id TEXT NOT NULL,
                ifname       TEXT NOT NULL,
                doc          TEXT NOT NULL CHECK (json_valid(doc)),
                PRIMARY KEY (network_id, container_id, ifname)
            ) STRICT
            """,
            # The primary key is the guarantee: one address, one holder, per network, whatever
            # the caller believes. Deleting the endpoint releases its addresses.
            """
            CREATE TABLE allocations (
                network_id   TEXT NOT NULL,
                address      TEXT NOT NULL,
                container_id TEXT NOT NULL,
                ifname       TEXT NOT NULL,
                PRIMARY KEY (network_id, address),
                FOREIGN KEY (network_id, container_id, ifname)
                    REFERENCES endpoints (network_id, container_id, ifname) ON DELETE CASCADE
            ) STRICT
            """,
        ),
    ),
    Migration(
        version=2,
        summary="IPAM cursors; allocations indexed by holder",
        creates=frozenset({"cursors"}),
        statements=(
            # The cursor remembers the last address handed out per subnet, so IPAM walks
            # forward instead of immediately reusing an address that was just released.
            """
            CREATE TABLE cursors (
                network_id TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
                subnet     TEXT NOT NULL,
                address    TEXT NOT NULL,
                PRIMARY KEY (network_id, subnet)
            ) STRICT
            """,
            # Without this index, releasing one endpoint's addresses (and the cascade from
            # endpoints) scans every allocation of the network.
            """
            CREATE INDEX allocations_by_holder ON allocations (network_id, container_id, ifname)
            """,
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def expected_tables(version: int) -> frozenset[str]:
    """The tables a database at schema ``version`` must contain.

    Checked at open, so a file whose header claims to be ours but whose tables are missing is
    reported as corrupt instead of being used (or "migrated" on top of).
    """
    return frozenset().union(*(m.creates for m in MIGRATIONS if m.version <= version))


def pending(current: int) -> tuple[Migration, ...]:
    """The migrations that take a database at version ``current`` to :data:`LATEST_VERSION`."""
    return tuple(m for m in MIGRATIONS if m.version > current)


def apply(conn: sqlite3.Connection, current: int) -> int:
    """Run the pending migrations on ``conn`` inside the caller's open transaction.

    Stamps the application id and the new ``user_version`` in the same transaction, and returns
    that version. sqlite3 errors propagate; the caller translates them and rolls back.
    """
    if not conn.in_transaction:
        raise StoreError("applying schema migrations: no transaction is open")
    version = current
    for migration in pending(current):
        for statement in migration.statements:
            conn.execute(statement)
        version = migration.version
    # PRAGMA arguments cannot be bound; both values are ints we control.
    conn.execute(f"PRAGMA application_id = {int(APPLICATION_ID)}")
    conn.execute(f"PRAGMA user_version = {int(version)}")
    return version
