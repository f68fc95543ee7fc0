"""An in-memory :class:`netd.store.base.Store` for tests that need a store but not SQLite.

It keeps the same rules as :class:`netd.store.sqlite.SqliteStore` (unique network id and name,
one holder per address per network, no network deleted under its endpoints, all-or-nothing
writes, errors naming the field) and passes the same contract suite
(tests/unit/test_contract_store.py). It keeps nothing across processes: the contract's
durability check is skipped for it, with that reason.
"""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

from netd.errors import Conflict, NotFound, StoreError
from netd.model import Endpoint, IPAddress, Network
from netd.store.base import Store
from netd.store.health import HealthReport, StoreHealth

Key = tuple[str, str, str]  # (network id, container id, ifname)


class MemoryStore:
    """Dicts behind a lock; a write checks everything before changing anything."""

    def __init__(self) -> None:
        self.fresh = True
        self.health = StoreHealth()
        self._lock = threading.Lock()
        self._closed = False
        self._networks: dict[str, Network] = {}  # insertion order = creation order on ties
        self._endpoints: dict[Key, Endpoint] = {}  # insertion order kept across replaces
        self._cursors: dict[str, dict[str, IPAddress]] = {}

    @classmethod
    def under(cls, directory: Path) -> MemoryStore:
        """The contract suite's opener: the directory is not used (nothing is kept)."""
        return cls()

    def _live(self, doing: str) -> None:
        if self._closed:
            raise StoreError(f"{doing}: the store is closed")

    def list_networks(self) -> list[Network]:
        """All networks, ordered by creation time, then by insertion."""
        with self._lock:
            self._live("listing networks")
            order = {nid: i for i, nid in enumerate(self._networks)}
            return sorted(self._networks.values(), key=lambda n: (n.created, order[n.id]))

    def create_network(self, network: Network) -> None:
        """Add a network; Conflict naming the id or the name if either exists."""
        doing = f'creating network "{network.name}" ({network.id})'
        with self._lock:
            self._live(doing)
            if network.id in self._networks:
                raise Conflict(f"{doing}: id exists", field="id", value=network.id)
            if any(n.name == network.name for n in self._networks.values()):
                raise Conflict(f"{doing}: name in use", field="name", value=network.name)
            self._networks[network.id] = network

    def delete_network(self, network_id: str) -> None:
        """Remove a network and its cursors; NotFound if absent, Conflict if it has endpoints."""
        doing = f"deleting network {network_id}"
        with self._lock:
            self._live(doing)
            if network_id not in self._networks:
                raise NotFound(f"{doing}: no such network", field="network_id", value=network_id)
            if any(k[0] == network_id for k in self._endpoints):
                raise Conflict(
                    f"{doing}: endpoints still attached", field="network_id", value=network_id
                )
            del self._networks[network_id]
            self._cursors.pop(network_id, None)

    def list_endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        """Endpoints of one network (or all), in the order they were first stored."""
        with self._lock:
            self._live("listing endpoints")
            return [
                e for k, e in self._endpoints.items() if network_id is None or k[0] == network_id
            ]

    def put_endpoint(self, endpoint: Endpoint, cursors: dict[str, IPAddress]) -> None:
        """Insert or replace an endpoint and the given cursors; Conflict naming the holder."""
        key = (endpoint.network_id, endpoint.container_id, endpoint.ifname)
        doing = f"putting endpoint {key[1]}/{key[2]} on network {key[0]}"
        wanted = {ipaddress.ip_interface(a).ip for a in endpoint.addresses}
        with self._lock:
            self._live(doing)
            if key[0] not in self._networks:
                raise NotFound(f"{doing}: no such network", field="network_id", value=key[0])
            for other_key, other in self._endpoints.items():
                if other_key[0] != key[0] or other_key == key:
                    continue
                for address in sorted(wanted & {a.ip for a in other.addresses}, key=str):
                    raise Conflict(
                        f"{doing}: address {address} is already held by {other_key[1]}/"
                        f"{other_key[2]}",
                        field="address",
                        value=str(address),
                    )
            self._endpoints[key] = endpoint
            self._cursors.setdefault(key[0], {}).update(cursors)

    def delete_endpoint(self, network_id: str, container_id: str, ifname: str) -> bool:
        """Remove an endpoint and release its addresses; False if it did not exist."""
        with self._lock:
            self._live(f"deleting endpoint {container_id}/{ifname} of network {network_id}")
            return self._endpoints.pop((network_id, container_id, ifname), None) is not None

    def get_cursors(self, network_id: str) -> dict[str, IPAddress]:
        """The IPAM cursors of a network (subnet string → last address handed out)."""
        with self._lock:
            self._live(f"reading the IPAM cursors of network {network_id}")
            return dict(sorted(self._cursors.get(network_id, {}).items()))

    def probe(self) -> HealthReport:
        """Memory can always be written: the current health."""
        return self.health.report()

    def close(self) -> None:
        """Refuse every later call, as the real stores do."""
        with self._lock:
            self._closed = True


_check: type[Store] = MemoryStore  # mypy: MemoryStore implements the Protocol
