"""The state store seam: what netd keeps on disk, independent of the engine.

The interface speaks in records (``netd.model``), never in SQL, so an etcd implementation can
keep the same documents under keys (``/netd/networks/<id>``, ``/netd/endpoints/<net>/<cid>/<if>``,
``/netd/allocations/<net>/<ip>``) and use compare-and-swap transactions where SQLite uses
constraints. Every method is one atomic transaction: either all of it is durable or none.
"""

from __future__ import annotations

from typing import Protocol

from ..model import Endpoint, IPAddress, Network
from .health import HealthReport, StoreHealth


class Store(Protocol):
    """Durable home of networks, endpoints and their address allocations."""

    fresh: bool  # True if opening the store created it (nothing was there before)
    health: StoreHealth  # the outcome of the latest write (netd.store.health)

    def list_networks(self) -> list[Network]:
        """All networks, ordered by creation time."""
        ...

    def create_network(self, network: Network) -> None:
        """Add a network; Conflict if its id or name exists."""
        ...

    def delete_network(self, network_id: str) -> None:
        """Remove a network with its cursors; Conflict if it still has endpoints."""
        ...

    def list_endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        """Endpoints of one network, or of all networks."""
        ...

    def put_endpoint(self, endpoint: Endpoint, cursors: dict[str, IPAddress]) -> None:
        """Insert or replace an endpoint, its allocations and the IPAM cursors, atomically.

        ``cursors`` maps a subnet (as a string) to the address last handed out in it. Raises
        Conflict naming the holder if any of the endpoint's addresses belongs to another
        endpoint (the uniqueness is enforced by the store itself, not only by the caller).
        """
        ...

    def delete_endpoint(self, network_id: str, container_id: str, ifname: str) -> bool:
        """Remove an endpoint and release its addresses; False if it did not exist."""
        ...

    def get_cursors(self, network_id: str) -> dict[str, IPAddress]:
        """The IPAM cursors of a network (subnet string → last address handed out)."""
        ...

    def probe(self) -> HealthReport:
        """Make a small durable write now and return :attr:`health` (it records the outcome)."""
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...
