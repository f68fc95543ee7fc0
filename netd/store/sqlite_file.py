"""Opening netd's SQLite file: create it atomically, refuse what is not ours, then migrate.

The rules this module enforces, in order:

1. A missing file is created fresh, atomically: the schema is built in a private temporary file
   that is hard-linked into place only once complete, so ``netd.db`` is either absent or a whole
   netd database (never an empty or half-built one), and two processes racing to create it
   cannot overwrite each other.
2. An existing file is only ever *used*, never recreated or replaced. An empty file, a file that
   is not SQLite, a SQLite database that is not netd's (``application_id``), a schema newer than
   this code, or a failed ``PRAGMA quick_check`` raises :class:`StoreCorrupt` naming the file.
   Nothing is written to such a file, not even the journal mode.
3. The connection is set up for durability: WAL journal, ``synchronous=FULL``, foreign keys on,
   a busy timeout; then pending migrations run in one ``BEGIN IMMEDIATE`` transaction.

It does not perform store operations (see :mod:`netd.store.sqlite`) and knows the schema only
through :mod:`netd.store.migrations`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from contextlib import suppress
from pathlib import Path

from ..errors import StoreCorrupt, StoreError
from . import migrations

log = logging.getLogger(__name__)

# Primary result codes (sqlite3.h) that mean "the bytes are not a sane database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# The smallest page size SQLite supports; any real database file is at least one page long.
_MIN_PAGE_SIZE = 512


def open_connection(path: Path, busy_timeout: float) -> tuple[sqlite3.Connection, int]:
    """Open (creating if missing) the state database at ``path``; return it and its version.

    The connection is in autocommit mode (``isolation_level=None``): callers issue ``BEGIN
    IMMEDIATE``/``COMMIT`` themselves, so the transaction boundaries are exactly the store's.
    """
    if not path.exists():
        _create(path, busy_timeout)
    _refuse_empty(path)
    conn = _connect(path, busy_timeout)
    try:
        version = _check_header(conn, path)
        _check_integrity(conn, path)
        _check_tables(conn, path, version)
        _configure(conn, path)
        version = _migrate(conn, path, version)
        _check_tables(conn, path, version)
    except BaseException:
        conn.close()
        raise
    return conn, version


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    # mode=rw: never let sqlite3 create the file as a side effect; creation is _create's job.
    uri = f"{path.absolute().as_uri()}?mode=rw"
    try:
        return sqlite3.connect(
            uri,
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as e:
        raise StoreError(f"opening state database {path}: {e}") from e


def _create(path: Path, busy_timeout: float) -> None:
    """Build a fresh database beside ``path`` and link it into place if ``path`` is still free."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    try:
        # 0600: the state names every container and address on the host.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except OSError as e:
        raise StoreError(f"creating state database {path}: {e.strerror}: {tmp}") from e
    try:
        conn = _connect(tmp, busy_timeout)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            version = migrations.apply(conn, 0)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"creating state database {path}: {e}") from e
        finally:
            conn.close()
        try:
            # link() fails if path exists, where rename() would silently replace it.
            os.link(tmp, path)
        except FileExistsError:
            log.info("state database %s was created by another process meanwhile", path)
            return
        except OSError as e:
            raise StoreError(f"creating state database {path}: {e.strerror}") from e
        _fsync_dir(path.parent)
        log.info("created state database %s at schema version %d", path, version)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    # The new directory entry must be durable too, or a power loss could lose the whole file.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise StoreError(f"syncing directory {directory}: {e.strerror}") from e


def _refuse_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise StoreError(f"opening state database {path}: {e.strerror}") from e
    if size == 0:
        # SQLite would happily treat an empty file as a new database; we never create one
        # empty (see _create), so emptiness means truncation and recreating would lose state.
        raise StoreCorrupt(
            f"state database {path} is empty (0 bytes): it was truncated; "
            "restore it from a backup or move it away to start with no state"
        )
    if size < _MIN_PAGE_SIZE:
        raise StoreCorrupt(
            f"state database {path} is only {size} bytes, too short to be a SQLite database "
            "(truncated?)"
        )


def _translate(e: sqlite3.Error, path: Path, doing: str) -> StoreError:
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreCorrupt(f"state database {path} is unreadable while {doing}: {e}")
    return StoreError(f"sqlite error while {doing} {path}: {e}")


def _check_header(conn: sqlite3.Connection, path: Path) -> int:
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as e:
        raise _translate(e, path, "reading the header of") from e
    if app_id != migrations.APPLICATION_ID:
        raise StoreCorrupt(
            f"state database {path} is not a netd database (application_id {app_id:#x}, "
            f"expected {migrations.APPLICATION_ID:#x}); refusing to use or replace it"
        )
    if version > migrations.LATEST_VERSION:
        raise StoreCorrupt(
            f"state database {path} has schema version {version}, newer than the "
            f"{migrations.LATEST_VERSION} this netd knows; upgrade netd or restore a backup"
        )
    if version < 0:
        raise StoreCorrupt(f"state database {path} has an invalid schema version {version}")
    return version


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.Error as e:
        raise _translate(e, path, "checking the integrity of") from e
    if rows != ["ok"]:
        shown = "; ".join(rows[:3]) + (f" (and {len(rows) - 3} more)" if len(rows) > 3 else "")
        raise StoreCorrupt(f"state database {path} failed its integrity check: {shown}")


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    try:
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        # FULL: in WAL mode, NORMAL may lose the last commits on power loss; FULL syncs the WAL
        # at every commit, so a commit that returned is on disk.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        synchronous = conn.execute("PRAGMA synchronous").fetchone()
        foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()
    except sqlite3.Error as e:
        raise _translate(e, path, "configuring") from e
    if mode.lower() != "wal":
        raise StoreError(f"state database {path}: cannot use WAL journal mode (got {mode!r})")
    if synchronous is None or int(synchronous[0]) != 2 or not foreign_keys or foreign_keys[0] != 1:
        raise StoreError(
            f"state database {path}: this SQLite refused synchronous=FULL or foreign_keys=ON"
        )


def _migrate(conn: sqlite3.Connection, path: Path, version: int) -> int:
    if version == migrations.LATEST_VERSION:
        return version
    try:
        conn.execute("BEGIN IMMEDIATE")
        # Another process may have migrated between our header read and taking the lock.
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        new = migrations.apply(conn, current) if current < migrations.LATEST_VERSION else current
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise _translate(e, path, f"migrating from schema version {version}") from e
    if new != current:
        log.info("migrated state database %s from schema version %d to %d", path, current, new)
    return new


def _check_tables(conn: sqlite3.Connection, path: Path, version: int) -> None:
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error as e:
        raise _translate(e, path, "listing the tables of") from e
    missing = migrations.expected_tables(version) - {str(r[0]) for r in rows}
    if missing:
        raise StoreCorrupt(
            f"state database {path} claims netd schema version {version} but lacks tables: "
            + ", ".join(sorted(missing))
        )
