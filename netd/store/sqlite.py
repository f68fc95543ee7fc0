"""SQLite implementation of the state store: the embedded default engine.

:class:`SqliteStore` implements :class:`netd.store.base.Store` over one file
(``<state_dir>/netd.db``) opened by :mod:`netd.store.sqlite_file` (WAL, ``synchronous=FULL``,
foreign keys, schema migrations; endpoint writes commit with ``NORMAL``, see ``_write``).
Every public method is exactly one transaction: writes take the database write lock up front
(``BEGIN IMMEDIATE``) so a check and the write it guards cannot be separated by another writer,
in this process or another one. One connection is shared by the daemon's worker threads and
guarded by a lock.

Records are kept as the JSON documents of :func:`netd.model.to_json`; columns exist only for
what SQLite must enforce (primary keys, the network name's uniqueness, one holder per address)
or sort by. This module does not decide anything about addresses: IPAM chooses them, the store
only refuses to record one address for two endpoints.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from .. import faults
from ..errors import Conflict, NotFound, StoreCorrupt, StoreError
from ..model import (
    Endpoint,
    IPAddress,
    Network,
    endpoint_from_json,
    network_from_json,
    to_json,
)
from .health import HealthReport, StoreHealth
from .records import cursor_rows as _cursor_rows
from .records import endpoint_addresses as _endpoint_addresses
from .sqlite_file import open_connection

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a writer waits for another process's write lock


def _dump(record: Network | Endpoint) -> str:
    return json.dumps(to_json(record), sort_keys=True, separators=(",", ":"))


def _network(doc: str) -> Network:
    return network_from_json(json.loads(doc))


def _endpoint(doc: str) -> Endpoint:
    return endpoint_from_json(json.loads(doc))


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def _holder(container_id: str, ifname: str) -> str:
    return f"container {container_id} interface {ifname}"


class SqliteStore:
    """The :class:`~netd.store.base.Store` protocol over one SQLite file; thread-safe."""

    def __init__(self, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        """Open (or create) the database at ``path``; StoreCorrupt if it is not usable."""
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        # Whether this open created the database: a daemon that finds netd's objects in the
        # kernel but a brand-new database must not take them for orphans (the db was lost).
        self.fresh = not path.exists()
        self.health = StoreHealth()
        self._conn, self.schema_version = open_connection(path, busy_timeout)

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- transaction plumbing ---------------------------------------------------------------

    def _live(self, doing: str) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"{doing}: the state store {self.path} is closed")
        return self._conn

    def _rollback(self) -> None:
        # After some errors (e.g. SQLITE_FULL) SQLite has already rolled back on its own.
        if self._conn.in_transaction:
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    @contextmanager
    def _write(self, doing: str, *, fsync: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: commit if the body returns, roll back if anything raises.

        ``fsync=False`` commits with ``synchronous=NORMAL``: safe against a crash of the daemon
        (the page cache keeps it; WAL keeps the file consistent), not against a power loss.
        Endpoint records use it: a power loss destroys the namespaces and veths they describe,
        and the next commit with ``FULL`` syncs them anyway (docs/store.md).
        """
        with self._lock:
            conn = self._live(doing)
            if not fsync:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                faults.point("store.write")  # "=eio@*": every write fails as on a failing disk
                conn.execute("COMMIT")
            except sqlite3.IntegrityError as e:
                # The schema's own guarantee caught what the explicit checks did not.
                self._rollback()
                raise Conflict(f"{doing}: {e}") from e
            except (sqlite3.Error, OSError) as e:
                # The disk's fault (full, EIO, read-only), not the request's: the status says so.
                self._rollback()
                reason = f"{e.strerror} (errno {e.errno})" if isinstance(e, OSError) else str(e)
                # Only the path and the engine's words: the status is shown to every caller.
                self.health.failed(f"{self.path}: {reason}")
                raise StoreError(f"sqlite error while {doing} in {self.path}: {reason}") from e
            except BaseException:
                self._rollback()
                raise
            else:
                self.health.succeeded()
            finally:
                if not fsync:
                    conn.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _read(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A read of one statement (atomic by itself), with errors translated."""
        with self._lock:
            conn = self._live(doing)
            try:
                yield conn
            except sqlite3.Error as e:
                raise StoreError(f"sqlite error while {doing} in {self.path}: {e}") from e

    def _load(self, what: str, parse: Callable[[str], T], raw: str) -> T:
        try:
            return parse(raw)
        except (ValueError, KeyError, TypeError) as e:
            raise StoreCorrupt(
                f"state database {self.path}: the stored document of {what} is unreadable: {e!r}"
            ) from e

    # --- networks ---------------------------------------------------------------------------

    def list_networks(self) -> list[Network]:
        """All networks, ordered by creation time (then by insertion order)."""
        with self._read("listing networks") as conn:
            rows = conn.execute("SELECT id, doc FROM networks ORDER BY created, rowid").fetchall()
        return [self._load(f"network {nid}", _network, doc) for nid, doc in rows]

    def create_network(self, network: Network) -> None:
        """Add a network; Conflict naming the id or the name if either exists."""
        doing = f'creating network "{network.name}" ({network.id})'
        doc = _dump(network)
        with self._write(doing) as conn:
            rows = conn.execute(
                "SELECT id, name FROM networks WHERE id = ? OR name = ?",
                (network.id, network.name),
            ).fetchall()
            for nid, name in rows:
                if nid == network.id:
                    raise Conflict(
                        f'{doing}: network id {nid} already exists (network "{name}")',
                        field="id",
                        value=nid,
                    )
                raise Conflict(
                    f'{doing}: the name "{name}" is already used by network {nid}',
                    field="name",
                    value=name,
                )
            conn.execute(
                "INSERT INTO networks (id, name, created, doc) VALUES (?, ?, ?, ?)",
                (network.id, network.name, float(network.created), doc),
            )

    def delete_network(self, network_id: str) -> None:
        """Remove a network and its cursors; NotFound if absent, Conflict if it has endpoints."""
        doing = f"deleting network {network_id}"
        with self._write(doing) as conn:
            row = conn.execute("SELECT name FROM networks WHERE id = ?", (network_id,)).fetchone()
            if row is None:
                raise NotFound(f"{doing}: no such network", field="network_id", value=network_id)
            attached = conn.execute(
                "SELECT container_id, ifname FROM endpoints WHERE network_id = ? ORDER BY rowid",
                (network_id,),
            ).fetchall()
            if attached:
                shown = ", ".join(f"{c}/{i}" for c, i in attached[:5])
                more = f" and {len(attached) - 5} more" if len(attached) > 5 else ""
                raise Conflict(
                    f'deleting network "{row[0]}" ({network_id}): {len(attached)} endpoint(s) '
                    f"still attached: {shown}{more}",
                    field="network_id",
                    value=network_id,
                )
            conn.execute("DELETE FROM cursors WHERE network_id = ?", (network_id,))
            conn.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    # --- endpoints --------------------------------------------------------------------------

    def list_endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        """Endpoints of one network (or all), in the order they were first stored."""
        args: tuple[str, ...] = ()
        if network_id is None:
            doing, sql = "listing endpoints", ""
        else:
            doing = f"listing endpoints of network {network_id}"
            sql, args = " WHERE network_id = ?", (network_id,)
        with self._read(doing) as conn:
            rows = conn.execute(
                f"SELECT container_id, ifname, doc FROM endpoints{sql} ORDER BY rowid", args
            ).fetchall()
        return [self._load(f"endpoint {c}/{i}", _endpoint, doc) for c, i, doc in rows]

    def put_endpoint(self, endpoint: Endpoint, cursors: dict[str, IPAddress]) -> None:
        """Insert or replace an endpoint, exactly its allocations, and the given cursors.

        One transaction: on Conflict (an address held by another endpoint, named in the
        message) or any other failure, nothing is changed.
        """
        addresses = _endpoint_addresses(endpoint)
        cursor_rows = _cursor_rows(cursors)
        net_id, cid, ifname = endpoint.network_id, endpoint.container_id, endpoint.ifname
        doing = f"putting endpoint {cid}/{ifname} on network {net_id}"
        doc = _dump(endpoint)
        with self._write(doing, fsync=False) as conn:
            row = conn.execute("SELECT name FROM networks WHERE id = ?", (net_id,)).fetchone()
            if row is None:
                raise NotFound(f"{doing}: no such network", field="network_id", value=net_id)
            if addresses:
                marks = ", ".join("?" * len(addresses))
                taken = conn.execute(
                    "SELECT address, container_id, ifname FROM allocations"
                    f" WHERE network_id = ? AND address IN ({marks})"
                    " AND NOT (container_id = ? AND ifname = ?) ORDER BY address",
                    (net_id, *addresses, cid, ifname),
                ).fetchone()
                if taken is not None:
                    raise Conflict(
                        f'{doing}: address {taken[0]} on network "{row[0]}" is already held by '
                        f"{_holder(taken[1], taken[2])}",
                        field="address",
                        value=taken[0],
                    )
            # An upsert, not INSERT OR REPLACE: replacing would delete the row (cascading to
            # its allocations) and give it a new rowid, changing the listing order.
            conn.execute(
                "INSERT INTO endpoints (network_id, container_id, ifname, doc)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (network_id, container_id, ifname) DO UPDATE SET doc = excluded.doc",
                (net_id, cid, ifname, doc),
            )
            conn.execute(
                "DELETE FROM allocations WHERE network_id = ? AND container_id = ? AND ifname = ?",
                (net_id, cid, ifname),
            )
            conn.executemany(
                "INSERT INTO allocations (network_id, address, container_id, ifname)"
                " VALUES (?, ?, ?, ?)",
                [(net_id, a, cid, ifname) for a in addresses],
            )
            conn.executemany(
                "INSERT INTO cursors (network_id, subnet, address) VALUES (?, ?, ?)"
                " ON CONFLICT (network_id, subnet) DO UPDATE SET address = excluded.address",
                [(net_id, s, a) for s, a in cursor_rows],
            )
            # Everything is written but not committed: a fault here proves the rollback.
            faults.point("store.put_endpoint")

    def delete_endpoint(self, network_id: str, container_id: str, ifname: str) -> bool:
        """Remove an endpoint and release its addresses; False if it did not exist."""
        doing = f"deleting endpoint {container_id}/{ifname} of network {network_id}"
        key = (network_id, container_id, ifname)
        with self._write(doing, fsync=False) as conn:
            conn.execute(
                "DELETE FROM allocations WHERE network_id = ? AND container_id = ? AND ifname = ?",
                key,
            )
            cur = conn.execute(
                "DELETE FROM endpoints WHERE network_id = ? AND container_id = ? AND ifname = ?",
                key,
            )
            existed = cur.rowcount > 0
        return existed

    def get_cursors(self, network_id: str) -> dict[str, IPAddress]:
        """The IPAM cursors of a network (subnet string → last address handed out)."""
        with self._read(f"reading the IPAM cursors of network {network_id}") as conn:
            rows = conn.execute(
                "SELECT subnet, address FROM cursors WHERE network_id = ? ORDER BY subnet",
                (network_id,),
            ).fetchall()
        return {
            subnet: self._load(f"cursor {subnet} of network {network_id}", _address, address)
            for subnet, address in rows
        }

    def probe(self) -> HealthReport:
        """Whether the store can write now: commit the smallest durable change SQLite makes.

        Rewriting the schema version with its own value dirties the header page, so the commit
        appends a frame to the WAL and syncs it (``synchronous=FULL``): a full, failing or
        read-only disk refuses it exactly as it would refuse a record. Nothing visible changes.
        """
        with suppress(StoreError), self._write("probing whether the store can write") as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute(f"PRAGMA user_version = {version}")
        return self.health.report()

    def close(self) -> None:
        """Close the connection (checkpointing the WAL); later calls raise StoreError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            except sqlite3.Error as e:
                raise StoreError(f"sqlite error while closing {self.path}: {e}") from e
