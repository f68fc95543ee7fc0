"""The daemon's operations: create/remove networks, attach/detach/check/gc endpoints.

This is where the seams meet, and only that: the work is done by the core's parts
(:mod:`netd.core`: state, network and endpoint lifecycles, firewall and DNS publication) and
the reconciler (:mod:`netd.reconcile`). Each operation validates everything first, then applies
its steps while keeping an undo list, and on failure undoes in reverse (STYLE.md, after
netavark's setup.rs). Blocking work (SQLite, netlink, libnftables) runs in worker threads.

What it does not do: parse HTTP or CNI (``netd.api``, ``netd.cni.handler``), talk to the kernel
itself (drivers, firewall, DNS do), or ask which driver a network has (drivers declare their
capabilities, :mod:`netd.drivers.base`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .core.dns_publish import DnsPublisher, DnsSink, NullDns
from .core.endpoints import CheckPublish, Endpoints
from .core.firewalling import Firewalling
from .core.networks import Admit, Networks
from .core.parts import Core
from .core.state import State, match_network
from .drivers.base import Driver
from .errors import StoreError, Unavailable
from .firewall.base import Firewall
from .ipam.subnets import DefaultPool
from .model import AttachRequest, Caller, Endpoint, IPAddress, IPNetwork, Network, NetworkSpec
from .reconcile import startup
from .reconcile.inventory import expected
from .reconcile.loop import Reconciler
from .reconcile.plan import Action, Expected
from .reconcile.reap import DEFAULT_GRACE, Reaper
from .store.base import Store
from .store.health import Prober

if TYPE_CHECKING:
    from .cluster.member import Member

log = logging.getLogger("netd.service")

__all__ = ["DnsSink", "NullDns", "Service", "match_network"]


class Service:
    """The daemon's operations over store, IPAM, drivers, firewall and DNS."""

    def __init__(
        self,
        *,
        store: Store,
        drivers: dict[str, Driver],
        firewall: Firewall,
        dns: DnsSink | None = None,
        pools: Iterable[DefaultPool] = (),
        ula: ipaddress.IPv6Network,
        host_routes: Callable[[], list[IPNetwork]] = list,
        dns_domain: str = "dns.netd",
        validate_netns: Callable[[str, int], None] = lambda path, inode: None,
        reap_grace: float = DEFAULT_GRACE,
        check_publish: CheckPublish = lambda ports, exempt: None,
        node: str = "",
        block_prefixlen: int = 26,
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.firewall = firewall
        self.dns: DnsSink = dns or NullDns()
        self.dns_domain = dns_domain
        self.validate_netns = validate_netns
        self.ready = False
        self.pools = tuple(pools)  # the owner role checks subnets against them
        self.ula = ula
        self.state = State(drivers)
        self.state.node = node  # this node's name in a cluster (docs/multi-host.md)
        self.state.block_prefixlen = block_prefixlen
        self.cluster: Member | None = None  # set by the daemon when the store is etcd
        self.firewalling = Firewalling(self.state, firewall)
        self.publisher = DnsPublisher(self.state, self.dns, dns_domain)
        self.endpoint_ops = Endpoints(
            self.state,
            store,
            self.firewalling,
            self.publisher,
            validate_netns=validate_netns,
            check_publish=check_publish,
        )
        self.network_ops = Networks(
            self.state,
            store,
            self.firewalling,
            self.publisher,
            pools=pools,
            ula=ula,
            host_routes=host_routes,
            remove_endpoint=self.endpoint_ops.remove,
        )
        self.core = Core(
            state=self.state,
            store=store,
            firewall=firewall,
            firewalling=self.firewalling,
            publisher=self.publisher,
            endpoint_ops=self.endpoint_ops,
            validate_netns=validate_netns,
        )
        self.reaper = Reaper(self.core, reap_grace)  # endpoints whose namespace is gone for good
        self.reconciler = Reconciler(self.core, self.reaper)
        self.store_health = Prober(store.probe)  # await it: the store's health, probed now

    # --- start-up and reconciliation ------------------------------------------------------

    async def start(self) -> None:
        """Load state, converge the kernel to it, and finish interrupted attaches."""
        await startup.start(self.core, self.reaper)
        self.ready = True

    async def run_reconciler(self, interval: float) -> None:
        """Reconcile every ``interval`` seconds until cancelled."""
        await self.reconciler.run(interval)

    async def reconcile(self, only: set[str] | None = None) -> list[Action]:
        """One reconcile pass (all networks, or ``only`` those ids); the repairs made."""
        return await self.reconciler.reconcile(only)

    # --- lookups ---------------------------------------------------------------------------

    def find_network(self, name_or_id: str) -> Network:
        """A network by name, full id or unique id prefix (≥ 3 chars, as docker accepts)."""
        return self.state.find_network(name_or_id)

    def list_networks(self) -> list[Network]:
        """All networks by creation time."""
        return self.state.list_networks()

    def settled_endpoints(self) -> list[Endpoint]:
        """Ready endpoints no request is changing: those whose links must exist right now."""
        return self.state.settled_endpoints()

    def endpoints(self, network: Network) -> list[Endpoint]:
        """The network's endpoints, oldest first."""
        return self.state.network_endpoints(network)

    def remote_endpoints(self, network: Network) -> list[Endpoint]:
        """A global network's endpoints on other nodes, as the cluster view has them."""
        return self.state.remote_endpoints(network.id)

    def find_endpoints(self, network: Network, container_id: str) -> list[Endpoint]:
        """Endpoints of one container on one network."""
        return [e for e in self.endpoints(network) if e.container_id == container_id]

    def driver(self, network: Network) -> Driver:
        """The driver of ``network``."""
        return self.state.driver(network)

    def host_interface(self, network: Network) -> str:
        """The host interface ``network``'s traffic enters through (its bridge); "" if none."""
        return self.state.driver(network).host_interface(network)

    def dns_for(self, network: Network) -> dict[str, list[str]]:
        """What a container on ``network`` should put in resolv.conf."""
        return self.publisher.dns_for(network)

    def check_netns(self, path: str) -> None:
        """CniBackend: InvalidInput unless ``path`` is a network namespace netd may use."""
        self.validate_netns(path, 0)

    def utilisation(self, network: Network) -> dict[str, tuple[int, int]]:
        """IPAM use per subnet: (used, size)."""
        return self.state.ipam[network.id].utilisation()

    def expected(self, settled_only: bool = False) -> Expected:
        """The host-side objects the records call for, by tag (link events compare with it)."""
        return expected(self.core, settled_only)

    def own_dns(self) -> frozenset[tuple[IPAddress, int]]:
        """(address, 53) of netd's own DNS on the host (never DNATed)."""
        return self.publisher.own_dns()

    # --- networks --------------------------------------------------------------------------

    async def create_network(
        self, spec: NetworkSpec, caller: Caller | None = None, *, admit: Admit | None = None
    ) -> Network:
        """Validate and create a network (see :meth:`netd.core.networks.Networks.create`)."""
        return await self.network_ops.create(spec, caller, admit=admit)

    async def ensure_network(self, spec: NetworkSpec) -> Network:
        """Return the named network, creating it from ``spec`` when it does not exist."""
        return await self.network_ops.ensure(spec)

    async def remove_network(self, name: str) -> Network:
        """Remove a network without endpoints (Docker refuses while endpoints are active)."""
        return await self.network_ops.remove(name)

    async def prune(self, among: Iterable[Network] | None = None) -> list[str]:
        """Remove every network (of ``among``, default all) without endpoints; their names."""
        return await self.network_ops.prune(among)

    async def get_network(self, name: str) -> Network:
        """CniBackend: a network by name."""
        return self.find_network(name)

    # --- endpoints -------------------------------------------------------------------------

    async def status(self) -> None:
        """CniBackend: Unavailable until start-up has finished; StoreError while the state
        store cannot write (probed now), since no ADD or DEL could be recorded."""
        if not self.ready:
            raise Unavailable("netd is starting; try again")
        health = await self.store_health()
        if not health.ok:
            raise StoreError(f"the state store cannot write: {health.reason}")

    async def attach(
        self, req: AttachRequest, *, plumb: bool = True, caller: Caller | None = None
    ) -> tuple[Network, Endpoint]:
        """Allocate, plumb, firewall and record an endpoint; or nothing."""
        return await self.endpoint_ops.attach(req, plumb=plumb, caller=caller)

    async def detach(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        """Idempotent detach: a missing network, endpoint or namespace is not an error."""
        await self.endpoint_ops.detach(network, container_id, ifname, netns)

    async def check(self, network: str, container_id: str, ifname: str, netns: str) -> None:
        """Raise NotFound/KernelError naming the first thing that is not as recorded."""
        await self.endpoint_ops.check(network, container_id, ifname, netns)

    async def gc(self, network: str, valid: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove CNI attachments of ``network`` that the runtime no longer lists."""
        return await self.endpoint_ops.gc(network, valid)
