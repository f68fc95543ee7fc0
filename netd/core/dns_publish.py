"""What the service tells DNS, and what it tells containers about DNS.

The DNS seam (:class:`DnsSink`) receives the desired record state after each change; netd's
DNS manager (:mod:`netd.dns.manager`) and :class:`NullDns` implement it. Where a container finds
the server depends on its network's driver (``Capabilities.dns``): on the network's gateway
addresses for the bridge, on 127.0.0.11 inside the container's own namespace for drivers whose
containers cannot reach the host (macvlan), nowhere for IPAM-only networks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from ..model import Endpoint, IPAddress, Network
from .state import State

log = logging.getLogger("netd.service")
NETNS_DNS = "127.0.0.11"  # Docker's embedded-DNS address inside each container's namespace


class DnsSink(Protocol):
    """What the service needs from DNS: the desired record state, pushed after each change."""

    def set_state(self, networks: list[tuple[Network, list[Endpoint]]]) -> None:
        """Replace the served records with this state (start-up)."""
        ...

    def update_network(self, network: Network, endpoints: list[Endpoint]) -> None:
        """Replace one network's records; others are untouched."""
        ...

    def remove_network(self, network_id: str) -> None:
        """Stop serving one network."""
        ...

    def lookup(self, name: str, network: str | None = None) -> list[str]:
        """Addresses of ``name`` as served (in one network, or as the host sees them)."""
        ...

    def records(self, network_id: str) -> dict[str, Any] | None:
        """The records served for one network, for inspect (None: not served)."""
        ...

    def query_stats(self) -> dict[str, Any] | None:
        """Query counters for /metrics (None: no server)."""
        ...

    def set_placements(self, placements: Mapping[str, str]) -> None:
        """Where each driver's containers find DNS (driver name -> ``Capabilities.dns``)."""
        ...

    def sync_network_sockets(self, network: Network, endpoints: list[Endpoint]) -> list[str]:
        """Serve these endpoints of a "netns" network at 127.0.0.11 in their namespaces, and
        no other endpoint of it; the failures."""
        ...

    def sync_endpoint_sockets(self, endpoints: list[tuple[Network, Endpoint]]) -> list[str]:
        """The same for every "netns" network at once (start-up); the failures."""
        ...


class NullDns:
    """DNS disabled: records go nowhere."""

    def set_state(self, networks: list[tuple[Network, list[Endpoint]]]) -> None:
        """Nothing to serve."""

    def update_network(self, network: Network, endpoints: list[Endpoint]) -> None:
        """Nothing to serve."""

    def remove_network(self, network_id: str) -> None:
        """Nothing to serve."""

    def lookup(self, name: str, network: str | None = None) -> list[str]:
        """Nothing is served."""
        return []

    def records(self, network_id: str) -> dict[str, Any] | None:
        """Nothing is served."""
        return None

    def query_stats(self) -> dict[str, Any] | None:
        """No server, no counters."""
        return None

    def set_placements(self, placements: Mapping[str, str]) -> None:
        """Nothing is served anywhere."""

    def sync_network_sockets(self, network: Network, endpoints: list[Endpoint]) -> list[str]:
        """Nothing is served."""
        return []

    def sync_endpoint_sockets(self, endpoints: list[tuple[Network, Endpoint]]) -> list[str]:
        """Nothing is served."""
        return []


class DnsPublisher:
    """Pushes records to the DNS seam off the event loop, one publication at a time."""

    def __init__(self, state: State, dns: DnsSink, domain: str) -> None:
        self.state = state
        self.dns = dns
        self.domain = domain
        self._lock = asyncio.Lock()
        dns.set_placements({name: d.capabilities.dns for name, d in state.drivers.items()})

    def resolvable(self, network: Network) -> list[Endpoint]:
        """The endpoints whose names DNS serves: all but those being detached and those reaped
        (namespace gone for good), other nodes' included on a global network."""
        here = self.state.network_endpoints(network)
        there = self.state.remote_endpoints(network.id)  # other nodes' (global networks)
        return [e for e in here + there if e.state not in ("deleting", "gone")]

    async def publish(self, network: Network | None = None, *, removed: bool = False) -> None:
        """Push records: one network, or (without ``network``) the whole state at start-up.

        One network's publication costs the same whatever the number of containers elsewhere.
        The snapshot is taken after acquiring the lock, so a publication carries every change
        made before it and an older snapshot never overwrites a newer one. DNS trouble never
        fails a network operation: it is logged.
        """
        async with self._lock:
            try:
                if network is None:
                    state = [(n, self.resolvable(n)) for n in self.state.list_networks()]
                    await asyncio.to_thread(self.dns.set_state, state)
                    # netns placement: the sockets an adopted worker serves, made to match.
                    inside = [(n, e) for n, eps in state if self._in_netns(n) for e in eps]
                    await asyncio.to_thread(self.dns.sync_endpoint_sockets, inside)
                elif removed:
                    await asyncio.to_thread(self.dns.remove_network, network.id)
                    if self._in_netns(network):
                        await asyncio.to_thread(self.dns.sync_network_sockets, network, [])
                else:
                    eps = self.resolvable(network)
                    await asyncio.to_thread(self.dns.update_network, network, eps)
                    if self._in_netns(network):
                        # A socket at 127.0.0.11 in each container's namespace: bound for a
                        # new endpoint, closed for one detached or reaped (it would keep the
                        # namespace alive). Failures are logged by the manager.
                        await asyncio.to_thread(self.dns.sync_network_sockets, network, eps)
            except Exception:
                log.exception("pushing DNS records failed")

    def _in_netns(self, network: Network) -> bool:
        return network.dns_enabled and self.state.caps(network).dns == "netns"

    def dns_for(self, network: Network) -> dict[str, list[str]]:
        """What a container on ``network`` should put in resolv.conf."""
        placement = self.state.caps(network).dns
        if not network.dns_enabled or placement == "none":
            return {"nameservers": [], "search": []}
        if placement == "netns":
            return {"nameservers": [NETNS_DNS], "search": [self.domain]}
        servers = [str(s.gateway) for s in network.subnets if s.gateway is not None]
        return {"nameservers": servers, "search": [self.domain]}

    def own_dns(self) -> frozenset[tuple[IPAddress, int]]:
        """(gateway, 53) of every network whose DNS listens on its gateway: netd's own DNS,
        which the firewall never DNATs, so a host socket there does not make a published port
        53 a takeover."""
        return frozenset(
            (s.gateway, 53)
            for n in self.state.networks.values()
            if self.state.caps(n).dns == "gateway"
            for s in n.subnets
            if s.gateway is not None
        )
