"""The service's in-memory truth: records, allocators, locks and the in-flight guard.

The store is the durable truth; this is its cache, loaded once at start-up and changed only
after the store accepted a change. Every operation serialises on one asyncio lock per network
id (unrelated networks never wait on each other) and creating or removing a network takes the
global lock, because names and subnets are global. An attachment being changed by a request is
"in flight": other requests for it get Unavailable, and the reconciler leaves it alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from ..drivers.base import Capabilities, Driver
from ..errors import InvalidInput, NotFound, Unavailable
from ..ipam.allocator import NetworkAllocator
from ..ipam.blocks import DEFAULT_BLOCK_PREFIXLEN, BlockAllocator
from ..model import Endpoint, IPAddress, Network

Key = tuple[str, str]  # (container id, ifname): an attachment within one network


def match_network(networks: Iterable[Network], name_or_id: str) -> Network:
    """The network called ``name_or_id``, with that full id, or the only one whose id starts
    with it (≥ 3 characters, as docker accepts); NotFound otherwise."""
    candidates = list(networks)
    for net in candidates:
        if name_or_id in (net.name, net.id):
            return net
    if len(name_or_id) >= 3:
        hits = [n for n in candidates if n.id.startswith(name_or_id)]
        if len(hits) == 1:
            return hits[0]
    raise NotFound(f"network {name_or_id!r} not found", field="network", value=name_or_id)


class State:
    """Records by network, IPAM allocators, per-network locks and attachments in flight."""

    def __init__(self, drivers: dict[str, Driver]) -> None:
        self.drivers = drivers
        self.networks: dict[str, Network] = {}  # by id
        self.endpoints: dict[str, dict[Key, Endpoint]] = {}  # network id → key → endpoint
        self.ipam: dict[str, NetworkAllocator] = {}  # BlockAllocator on a global network
        self.inflight: dict[str, set[Key]] = {}  # network id → keys being changed
        # Global networks: other nodes' ready endpoints, from the cluster view (netd.cluster).
        # Never plumbed, reconciled or reaped here; DNS serves them and IPAM skips their
        # addresses.
        self.remote: dict[str, dict[tuple[str, str, str], Endpoint]] = {}
        self.node = ""  # this node's name in a cluster ("" on a single host)
        self.block_prefixlen = DEFAULT_BLOCK_PREFIXLEN  # the cluster's ipam_block_size
        self.global_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}

    # --- records ---------------------------------------------------------------------------

    def add_network(
        self,
        net: Network,
        endpoints: Iterable[Endpoint] = (),
        cursors: dict[str, IPAddress] | None = None,
    ) -> None:
        """Start holding ``net`` with its endpoints and an allocator primed with their addresses."""
        eps = list(endpoints)
        self.networks[net.id] = net
        self.endpoints[net.id] = {ep.key: ep for ep in eps}
        taken = [a.ip for ep in eps for a in ep.addresses]
        if self.node and self.caps(net).scope == "global":
            # A network of the cluster: this node allocates inside address blocks it claims
            # (Calico's scheme; netd.ipam.blocks); the sync tells it the others' blocks.
            self.ipam[net.id] = BlockAllocator(
                net, self.node, self.block_prefixlen, taken, {}, cursors or {}
            )
        else:
            self.ipam[net.id] = NetworkAllocator(net, taken, cursors or {})

    def set_remote(
        self, net: Network, endpoints: Iterable[Endpoint], blocks: Mapping[str, str]
    ) -> None:
        """Other nodes' endpoints and the address blocks of a global network (lock held); IPAM
        re-primed with every address in use, here and there."""
        self.remote[net.id] = {(e.node, *e.key): e for e in endpoints}
        allocator = self.ipam[net.id]
        taken = {a.ip for ep in self.endpoints[net.id].values() for a in ep.addresses}
        taken |= {a.ip for ep in self.remote[net.id].values() for a in ep.addresses}
        if isinstance(allocator, BlockAllocator):
            allocator.set_view(blocks, taken)
        else:
            self.ipam[net.id] = NetworkAllocator(net, taken, allocator.cursors)

    def remote_endpoints(self, network_id: str) -> list[Endpoint]:
        """Other nodes' endpoints on a global network, oldest first."""
        return sorted(self.remote.get(network_id, {}).values(), key=lambda e: e.created)

    def drop_network(self, net: Network) -> None:
        """Stop holding ``net`` (its record is gone from the store)."""
        self.networks.pop(net.id, None)
        self.endpoints.pop(net.id, None)
        self.ipam.pop(net.id, None)
        self.remote.pop(net.id, None)

    def forget_lock(self, network_id: str) -> None:
        """Drop a removed network's lock."""
        self._locks.pop(network_id, None)

    # --- lookups ---------------------------------------------------------------------------

    def driver(self, network: Network) -> Driver:
        """The driver of ``network`` (checked at create, so always present)."""
        return self.drivers[network.driver]

    def caps(self, network: Network) -> Capabilities:
        """What ``network``'s driver supports."""
        return self.drivers[network.driver].capabilities

    def driver_named(self, name: str) -> Driver:
        """The driver called ``name``; InvalidInput naming the known ones."""
        try:
            return self.drivers[name]
        except KeyError:
            raise InvalidInput(
                "driver", name, f"unknown driver; available: {', '.join(self.drivers)}"
            ) from None

    def lock(self, network_id: str) -> asyncio.Lock:
        """The lock serialising changes to one network's records."""
        return self._locks.setdefault(network_id, asyncio.Lock())

    def find_network(self, name_or_id: str) -> Network:
        """A network by name, full id or unique id prefix (≥ 3 chars, as docker accepts)."""
        return match_network(self.networks.values(), name_or_id)

    def list_networks(self) -> list[Network]:
        """All networks by creation time."""
        return sorted(self.networks.values(), key=lambda n: n.created)

    def network_endpoints(self, network: Network) -> list[Endpoint]:
        """The network's endpoints, oldest first."""
        return sorted(self.endpoints.get(network.id, {}).values(), key=lambda e: e.created)

    def all_endpoints(self) -> list[Endpoint]:
        """Every endpoint of every network (any state)."""
        return [ep for table in self.endpoints.values() for ep in table.values()]

    def endpoint(self, network_id: str, key: Key) -> Endpoint | None:
        """The current record of one attachment, if any."""
        return self.endpoints.get(network_id, {}).get(key)

    def plumbed(self, network: Network) -> bool:
        """Whether netd made ``network``'s interfaces (not IPAM-only)."""
        return self.caps(network).plumbs

    def settled(self, ep: Endpoint) -> bool:
        """Ready, plumbed by netd and not being changed: the reconciler's to check."""
        net = self.networks.get(ep.network_id)
        return (
            net is not None
            and ep.state == "ready"
            and self.plumbed(net)
            and ep.key not in self.inflight.get(ep.network_id, ())
        )

    def settled_endpoints(self) -> list[Endpoint]:
        """Ready endpoints no request is changing: those whose links must exist right now."""
        return [ep for ep in self.all_endpoints() if self.settled(ep)]

    def busy(self) -> set[Key]:
        """Every attachment in flight, across networks."""
        return {key for keys in self.inflight.values() for key in keys}

    # --- in flight -------------------------------------------------------------------------

    def refuse_busy(self, net: Network, key: Key) -> None:
        """Unavailable (CNI: try again) while another request changes this attachment."""
        if key in self.inflight.setdefault(net.id, set()):
            raise Unavailable(
                f"attachment {key[0]!r}/{key[1]!r} on network {net.name!r} is being changed by "
                "another request; try again"
            )

    def still_current(self, network_id: str, ep: Endpoint | None) -> bool:
        """Whether something planned outside the network's lock still applies (lock held): the
        network is on record and ``ep`` is the same record, not in flight."""
        if network_id not in self.networks:
            return False
        if ep is None:
            return True
        return self.endpoints[network_id].get(ep.key) is ep and ep.key not in self.inflight.get(
            network_id, set()
        )
