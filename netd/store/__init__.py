"""The state store: the seam's Protocol and the factory that chooses an engine by name.

``open_store("sqlite", state_dir)`` is the one way the daemon gets a :class:`Store`; the rest of
netd depends only on the Protocol, never on an engine. Only this package speaks SQL.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ConfigError, StoreError
from .base import Store

__all__ = ["DB_FILENAME", "STORE_KINDS", "Store", "open_store"]

log = logging.getLogger(__name__)

DB_FILENAME = "netd.db"
STORE_KINDS = ("sqlite", "etcd")


def open_store(kind: str, state_dir: Path) -> Store:
    """Open the state store engine named ``kind`` keeping its data under ``state_dir``.

    ``"sqlite"`` opens (creating if missing) ``<state_dir>/netd.db``; ``state_dir`` is created
    with mode 0700 if absent. ``"etcd"`` is planned but not implemented yet: ConfigError.
    StoreCorrupt if the existing database is unusable (it is never replaced).
    """
    if kind == "sqlite":
        # Imported here so that choosing another engine never loads sqlite3.
        from .sqlite import SqliteStore

        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(f"creating state directory {state_dir}: {e.strerror}") from e
        path = state_dir / DB_FILENAME
        store = SqliteStore(path)
        log.info("state store: sqlite at %s (schema version %d)", path, store.schema_version)
        return store
    if kind == "etcd":
        raise ConfigError(
            'state store "etcd" is not implemented yet; use "sqlite"', field="store", value=kind
        )
    raise ConfigError(
        f"unknown state store {kind!r}; known: {', '.join(repr(k) for k in STORE_KINDS)}",
        field="store",
        value=kind,
    )
