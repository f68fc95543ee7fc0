"""The recovery copy: every record the store commits, also kept as a file outside the database.

``netd recover`` rebuilds a lost database from the kernel, but the kernel keeps only what netd
tags in it (ids, addresses, MACs, firewall rules): not network names, labels, options, owners,
endpoint names, aliases or hostnames. This module keeps those in a second copy, written after
every commit, in a directory the operator may put on another disk (``recovery_dir``):

    <dir>/<network id>/network.<revision>.json          the network record
    <dir>/<network id>/ep-<hash of key>.<revision>.json one endpoint (key: container id, ifname)

Each file is one JSON document ``{"format", "kind", "revision", "sha256", "record"}`` where
``record`` is the store's own document (:func:`netd.model.to_json`) and ``sha256`` its checksum,
so a torn or bit-flipped file is detected, not trusted. The revision (nanoseconds since the
epoch, strictly increasing) is in the name: a new version of a record is written under its *new*
name and only then are the older revisions unlinked, so at every instant a complete version
exists, and the reader takes the highest revision that passes its checksum (a version cut short
by a crash fails it, and the previous one is still there). Nothing is ever replaced in place:
on ext4 a rename over a file or a truncate of one starts the writeback of its data at once
(``auto_da_alloc``), 0.5 ms per write here against ~0.02 ms for a new file.

Durability follows the store's (docs/store.md): network files and directories are fsynced like
the store's ``FULL`` commits; endpoint files are not, like its ``NORMAL`` endpoint commits (a
power loss destroys the namespaces and veths they describe).

:class:`MirroredStore` wraps any :class:`~netd.store.base.Store`: it commits first and writes
the copy after, holding a per-record lock across both so two writes of one record reach the
copy in commit order. A crash between the two leaves the copy one change behind the database;
``sync`` (daemon start) closes that gap while the database lives, and ``netd recover`` lets the
kernel decide what still exists when it does not. A failed copy write never fails the
operation: it is logged and that network is rewritten whole at its next change.

What it does not do: decide anything at recovery time (``netd.reconcile.recover_copy``), or read the
kernel.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import faults
from ..errors import StoreCorrupt
from ..model import (
    Endpoint,
    IPAddress,
    Network,
    endpoint_from_json,
    network_from_json,
    to_json,
)
from .base import Store
from .health import HealthReport

log = logging.getLogger(__name__)

COPY_FORMAT = 1
NETWORK_STEM = "network"
_LOCK_STRIPES = 64


def endpoint_stem(container_id: str, ifname: str) -> str:
    """The file stem of an endpoint's copy: a hash of the key (container ids reach 256 chars)."""
    digest = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()
    return f"ep-{digest[:24]}"


def split_name(name: str) -> tuple[str, int] | None:
    """``(stem, revision)`` of a copy file's name; None for anything else (temporary files)."""
    stem, dot, rest = name.partition(".")
    revision, dot2, ext = rest.partition(".")
    if not (dot and dot2 and ext == "json" and revision.isdigit()):
        return None
    return stem, int(revision)


def _canonical(record: Any) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def encode(kind: str, record: Network | Endpoint, revision: int) -> bytes:
    """The bytes of one copy file (the record serialised once; the envelope around it)."""
    body = _canonical(to_json(record))
    digest = hashlib.sha256(body.encode()).hexdigest()
    return (
        f'{{"format":{COPY_FORMAT},"kind":"{kind}","record":{body},'
        f'"revision":{revision},"sha256":"{digest}"}}\n'
    ).encode()


def decode(data: bytes, kind: str) -> tuple[Any, int]:
    """``(record document, revision)`` of a copy file; ValueError saying what is wrong."""
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    if not isinstance(envelope, dict):
        raise ValueError("not a JSON object")
    if envelope.get("format") != COPY_FORMAT:
        raise ValueError(f"unknown format {envelope.get('format')!r} (expected {COPY_FORMAT})")
    if envelope.get("kind") != kind:
        raise ValueError(f"holds a {envelope.get('kind')!r} record, expected {kind!r}")
    record = envelope.get("record")
    if hashlib.sha256(_canonical(record).encode()).hexdigest() != envelope.get("sha256"):
        raise ValueError("checksum mismatch (the file is damaged)")
    return record, int(envelope.get("revision", 0))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _versions(where: Path) -> dict[str, list[tuple[int, str]]]:
    """The copy files in one network's directory: stem → [(revision, name)], newest first."""
    out: dict[str, list[tuple[int, str]]] = {}
    try:
        names = os.listdir(where)
    except FileNotFoundError:
        return out
    for name in names:
        parsed = split_name(name)
        if parsed is not None:
            out.setdefault(parsed[0], []).append((parsed[1], name))
    for versions in out.values():
        versions.sort(reverse=True)
    return out


class CopyWriter:
    """Writes and removes the files of the copy under ``directory``.

    Writes of one record must not run concurrently (:class:`MirroredStore` serialises them);
    writes of different records may.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._revision_lock = threading.Lock()
        self._revision = 0
        # What is on disk, so a write knows what to unlink without listing the directory:
        # network id → stem → [(revision, file name)], newest first.
        self._files: dict[str, dict[str, list[tuple[int, str]]]] = {}
        self._files_lock = threading.Lock()

    def _next_revision(self, above: int) -> int:
        # Strictly increasing within a process and, through the clock, across restarts; never
        # below a revision already on disk for the record (a clock set back).
        with self._revision_lock:
            self._revision = max(self._revision + 1, time.time_ns(), above + 1)
            return self._revision

    def _known(self, network_id: str) -> dict[str, list[tuple[int, str]]]:
        with self._files_lock:
            known = self._files.get(network_id)
            if known is None:
                known = self._files[network_id] = _versions(self.directory / network_id)
            return known

    def _network_dir(self, network_id: str, *, check: bool = False) -> Path:
        """The network's directory, created if this writer has not seen it (or ``check``)."""
        where = self.directory / network_id
        if check or network_id not in self._files:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                where.mkdir(mode=0o700)
            except FileExistsError:
                pass
            else:
                _fsync_dir(self.directory)
        return where

    def _write(self, network_id: str, stem: str, kind: str, record: Any, durable: bool) -> None:
        where = self._network_dir(network_id)
        known = self._known(network_id)
        old = known.get(stem, [])
        revision = self._next_revision(old[0][0] if old else 0)
        name = f"{stem}.{revision}.json"
        data = encode(kind, record, revision)
        # A new name, so nothing is replaced; cut short, it fails its checksum (docstring).
        fd = os.open(where / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.EIO, f"short write of {len(data)} bytes", str(where / name))
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(where / name)
            raise
        if durable:
            _fsync_dir(where)
        known[stem] = [(revision, name)]
        for _, older in old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where / older)

    def write_network(self, network: Network) -> None:
        """Write (durably) the network's record."""
        self._write(network.id, NETWORK_STEM, "network", network, durable=True)

    def remove_network(self, network_id: str) -> None:
        """Remove the network's directory (renamed away first, so it vanishes at once)."""
        with self._files_lock:
            self._files.pop(network_id, None)
        where = self.directory / network_id
        if not where.exists():
            return
        gone = self.directory / f".removed-{network_id}-{time.time_ns()}"
        os.rename(where, gone)
        _fsync_dir(self.directory)
        _remove_tree(gone)

    def write_endpoint(self, endpoint: Endpoint) -> None:
        """Write the endpoint's record (not fsynced: see the module docstring)."""
        stem = endpoint_stem(endpoint.container_id, endpoint.ifname)
        self._write(endpoint.network_id, stem, "endpoint", endpoint, durable=False)

    def remove_endpoint(self, network_id: str, container_id: str, ifname: str) -> None:
        """Remove every version of the endpoint's file."""
        where = self.directory / network_id
        for _, name in self._known(network_id).pop(endpoint_stem(container_id, ifname), []):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where / name)

    def sync_network(self, network: Network, endpoints: list[Endpoint]) -> int:
        """Make one network's files say exactly this; the number of files changed."""
        where = self._network_dir(network.id, check=True)
        on_disk = _versions(where)
        with self._files_lock:
            self._files[network.id] = on_disk
        wanted: dict[str, tuple[str, Network | Endpoint]] = {NETWORK_STEM: ("network", network)}
        for ep in endpoints:
            wanted[endpoint_stem(ep.container_id, ep.ifname)] = ("endpoint", ep)
        changed = 0
        for stem, (kind, record) in wanted.items():
            versions = on_disk.get(stem, [])
            try:
                current, revision, _ = _read_versions(where, versions, kind, stem)
            except (ValueError, TypeError):
                current, revision = None, 0
            keep = [v for v in versions if v[0] == revision]
            if current != to_json(record) or not keep:
                self._write(network.id, stem, kind, record, durable=kind == "network")
                changed += 1
            elif len(versions) > 1:  # a crash left other versions (older, or damaged): drop them
                for _, name in versions:
                    if (revision, name) not in keep:
                        os.unlink(where / name)
                on_disk[stem] = keep
                changed += 1
        for name in os.listdir(where):
            parsed = split_name(name)
            if parsed is None or parsed[0] not in wanted:
                (where / name).unlink()  # a record the database no longer has, or junk
                on_disk.pop(parsed[0] if parsed else "", None)
                changed += 1
        return changed

    def sync(self, store: Store) -> int:
        """Make the whole copy say what ``store`` says; the number of files changed.

        StoreCorrupt if the store was just created while the copy holds networks: the
        database was lost, and overwriting the copy would lose the last record of the state.
        """
        networks = store.list_networks()
        present = network_dirs(self.directory)
        if store.fresh and not networks and present:
            raise StoreCorrupt(
                f"the state database was just created, but the recovery copy in "
                f"{self.directory} holds {len(present)} networks: the database was probably "
                "lost. Run `netd recover` to rebuild it from the copy and the kernel (or move "
                "the copy away to start with no state)"
            )
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        changed = 0
        for net in networks:
            changed += self.sync_network(net, store.list_endpoints(net.id))
        ids = {n.id for n in networks}
        for stale in present - ids:
            self.remove_network(stale)
            changed += 1
        for child in self.directory.iterdir():
            if child.name.startswith(".removed-") and child.is_dir():
                _remove_tree(child)
        if changed:
            _fsync_dir(self.directory)
        return changed


def _remove_tree(where: Path) -> None:
    for child in where.iterdir():
        child.unlink()
    where.rmdir()


def network_dirs(directory: Path) -> set[str]:
    """Ids of the networks that have a directory in the copy."""
    try:
        return {p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")}
    except FileNotFoundError:
        return set()


# --- reading the copy (for `netd recover`) ------------------------------------------------------


@dataclass
class CopyContents:
    """What a copy directory holds: networks by id, their endpoints, and what could not be read."""

    directory: Path
    found: bool = False
    networks: dict[str, Network] = field(default_factory=dict)
    endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    newest: int = 0  # highest revision seen (ns since the epoch)


def _read_versions(
    where: Path, versions: list[tuple[int, str]], kind: str, what: str
) -> tuple[Any, int, list[str]]:
    """The newest readable version's record and revision; ValueError if none reads."""
    problems: list[str] = []
    for _, name in versions:
        try:
            record, revision = decode((where / name).read_bytes(), kind)
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"copy of {what} ({where / name}): {exc}")
            continue
        if problems:
            problems = [p + f"; used the older revision {revision}" for p in problems]
        return record, revision, problems
    raise ValueError("; ".join(problems) or f"copy of {what}: no file")


def _problem(exc: Exception, what: str, where: Path) -> str:
    text = str(exc)
    return text if text.startswith("copy of") else f"copy of {what} ({where}): bad record {exc!r}"


def read_copy(directory: Path) -> CopyContents:
    """Every readable record under ``directory``; unreadable files are named in ``problems``.

    Of several versions of a record (a crash between writing a new one and unlinking the old),
    the highest revision that passes its checksum is taken.
    """
    out = CopyContents(directory)
    if not directory.is_dir():
        out.problems.append(f"no recovery copy at {directory}")
        return out
    out.found = True
    for net_id in sorted(network_dirs(directory)):
        where = directory / net_id
        files = _versions(where)
        try:
            doc, revision, problems = _read_versions(
                where, files.pop(NETWORK_STEM, []), "network", f"network {net_id[:12]}"
            )
            net = network_from_json(doc)
            if net.id != net_id:
                raise ValueError(f"copy of network {net_id[:12]}: holds network {net.id}")
        except (ValueError, KeyError, TypeError) as exc:
            out.problems.append(_problem(exc, f"network {net_id[:12]}", where))
            continue
        out.problems += problems
        out.networks[net_id] = net
        out.newest = max(out.newest, revision)
        eps = out.endpoints.setdefault(net_id, [])
        for stem, versions in sorted(files.items()):
            what = f"endpoint {stem} of network {net_id[:12]}"
            try:
                doc, revision, problems = _read_versions(where, versions, "endpoint", what)
                ep = endpoint_from_json(doc)
                if ep.network_id != net_id or stem != endpoint_stem(ep.container_id, ep.ifname):
                    raise ValueError(f"copy of {what}: holds another endpoint's record")
            except (ValueError, KeyError, TypeError) as exc:
                out.problems.append(_problem(exc, what, where))
                continue
            out.problems += problems
            eps.append(ep)
            out.newest = max(out.newest, revision)
        eps.sort(key=lambda e: e.created)
    return out


# --- the store wrapper ------------------------------------------------------------------------


class MirroredStore:
    """A :class:`~netd.store.base.Store` that keeps the recovery copy after every commit."""

    def __init__(self, store: Store, writer: CopyWriter) -> None:
        self.store = store
        self.writer = writer
        self.fresh = store.fresh  # whether opening the store created it
        self.health = store.health  # the database's: the copy's failures are only logged
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._dirty: set[str] = set()  # networks whose copy missed a write
        self._dirty_lock = threading.Lock()

    def __enter__(self) -> MirroredStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _record(self, *key: str) -> Iterator[None]:
        with self._locks[hash(key) % _LOCK_STRIPES]:
            yield

    def _mirror(self, network_id: str, doing: str, write: Any, *args: Any) -> None:
        """Write to the copy after a commit; a failure is logged, never raised."""
        faults.point("mirror.committed")
        try:
            with self._dirty_lock:
                dirty = network_id in self._dirty
            if dirty:
                self._resync(network_id)
            else:
                write(*args)
        except OSError as exc:
            with self._dirty_lock:
                self._dirty.add(network_id)
            log.error(
                "recovery copy: %s in %s failed: %s; the database has it, the copy will be "
                "rewritten at the next change",
                doing,
                self.writer.directory,
                exc,
            )

    def _resync(self, network_id: str) -> None:
        net = next((n for n in self.store.list_networks() if n.id == network_id), None)
        if net is None:
            self.writer.remove_network(network_id)
        else:
            self.writer.sync_network(net, self.store.list_endpoints(network_id))
        with self._dirty_lock:
            self._dirty.discard(network_id)
        log.info("recovery copy: network %s rewritten", network_id[:12])

    def sync(self) -> int:
        """Rewrite the copy from the database (daemon start); files changed.

        StoreCorrupt if the database is new and the copy is not (see :meth:`CopyWriter.sync`);
        an unwritable copy is logged, not raised: the daemon works without it.
        """
        try:
            changed = self.writer.sync(self.store)
        except OSError as exc:
            log.error(
                "recovery copy: bringing %s up to date failed: %s", self.writer.directory, exc
            )
            with self._dirty_lock:
                self._dirty.update(n.id for n in self.store.list_networks())
            return 0
        if changed:
            log.info(
                "recovery copy: %d files brought up to date in %s", changed, self.writer.directory
            )
        return changed

    def list_networks(self) -> list[Network]:
        """All networks, ordered by creation time."""
        return self.store.list_networks()

    def create_network(self, network: Network) -> None:
        """Add a network, then its copy."""
        with self._record(network.id):
            self.store.create_network(network)
            self._mirror(network.id, "writing network", self.writer.write_network, network)

    def delete_network(self, network_id: str) -> None:
        """Remove a network, then its copy."""
        with self._record(network_id):
            self.store.delete_network(network_id)
            self._mirror(network_id, "removing network", self.writer.remove_network, network_id)

    def list_endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        """Endpoints of one network, or of all networks."""
        return self.store.list_endpoints(network_id)

    def put_endpoint(self, endpoint: Endpoint, cursors: dict[str, IPAddress]) -> None:
        """Insert or replace an endpoint, then its copy."""
        with self._record(endpoint.network_id, endpoint.container_id, endpoint.ifname):
            self.store.put_endpoint(endpoint, cursors)
            self._mirror(
                endpoint.network_id, "writing endpoint", self.writer.write_endpoint, endpoint
            )

    def delete_endpoint(self, network_id: str, container_id: str, ifname: str) -> bool:
        """Remove an endpoint, then its copy."""
        with self._record(network_id, container_id, ifname):
            existed = self.store.delete_endpoint(network_id, container_id, ifname)
            self._mirror(
                network_id,
                "removing endpoint",
                self.writer.remove_endpoint,
                network_id,
                container_id,
                ifname,
            )
        return existed

    def get_cursors(self, network_id: str) -> dict[str, IPAddress]:
        """The IPAM cursors of a network."""
        return self.store.get_cursors(network_id)

    def probe(self) -> HealthReport:
        """The wrapped store's probe: whether the database can write."""
        return self.store.probe()

    def close(self) -> None:
        """Close the wrapped store."""
        self.store.close()
