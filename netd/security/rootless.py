"""Rootless networks: what a caller with the policy's "owner" role may do, and nothing more.

An owner (``policy.rootless_users``, ``policy.rootless_group``) creates networks that record
their uid (``Network.owner_uid``) and works only with those. :class:`OwnerScope` stands in for
the service in the API handlers and the CNI backend for such a caller:

- Sees only its own networks: others are "not found" (list, inspect, connect, remove, CNI).
- Creates within quotas (``rootless_max_networks`` networks, ``rootless_max_addresses`` IPv4
  addresses summed over subnet sizes), checked under the service's global lock.
- Subnets only from the default address pools (a given subnet must lie inside a pool, be no
  larger than the pool's block size and overlap no host route); IPv6 only from the v6 pools or
  the ULA prefix. Options only from :data:`OWNER_OPTIONS` (no custom bridge name, no
  ``host_ipv4``/``host_ipv6``).
- Publishes no host port below the kernel's ``net.ipv4.ip_unprivileged_port_start``, at most
  ``rootless_max_ports_per_request`` per request and ``rootless_max_ports`` in all (counted
  under the event loop with the requests still in flight, so parallel requests cannot both
  squeeze under the quota). Ports a host socket holds are refused for everyone by the service
  (``hostports``).
- Names no DNS upstream on the host's loopback, link-local or own addresses (``upstreams``).
- Learns from a conflict only that a name, subnet or port is taken, not by whom
  (``disclosure``).
- Attaches (and CNI CHECKs) only namespaces it owns, as the kernel tells (``nsowner``).

Pure checks are functions; :class:`OwnerScope` only wires them to the service. Who is an owner
is decided in ``policy``; this module trusts the role it is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..drivers.base import Driver
from ..errors import Conflict, NetdError, NotFound, PermissionDenied
from ..ipam.subnets import DefaultPool
from ..model import (
    AttachRequest,
    Caller,
    Endpoint,
    IPAddress,
    IPNetwork,
    Network,
    NetworkSpec,
    PortMapping,
)
from ..options import DOCKER_ALIASES
from . import nsowner
from .disclosure import network_conflict, port_conflict
from .procinfo import caller_groups
from .upstreams import check_upstreams, host_addresses

if TYPE_CHECKING:
    from ..service import Service
    from .policy import PolicyConfig

# Bridge options an owner may set (canonical names): they change only the owner's own network.
# Refused: "bridge" (a chosen interface name could shadow or squat a host interface's name) and
# "host_ipv4"/"host_ipv6" (the source address of the host's outgoing traffic is the admin's).
OWNER_OPTIONS = frozenset(
    {
        "mtu",
        "enable_icc",
        "enable_ip_masquerade",
        "dns",
        "dns_servers",
        "dns_forward_internal",
        "isolate",
        "anti_spoof",
    }
)
PORT_START_SYSCTL = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
DEFAULT_PORT_START = 1024


@dataclass(frozen=True)
class Confinement:
    """A rootless caller and its quotas, set on the request by the authorisation middleware."""

    caller: Caller
    max_networks: int
    max_addresses: int
    max_ports: int = 256
    max_ports_per_request: int = 128

    @classmethod
    def from_policy(cls, caller: Caller, config: PolicyConfig) -> Confinement:
        """The confinement the policy config gives ``caller``."""
        return cls(
            caller,
            config.rootless_max_networks,
            config.rootless_max_addresses,
            config.rootless_max_ports,
            config.rootless_max_ports_per_request,
        )


def ipv4_size(network: Network) -> int:
    """Addresses the network's IPv4 subnets span (what counts against the address quota)."""
    return sum(s.subnet.num_addresses for s in network.subnets if s.version == 4)


def check_quota(network: Network, owned: Sequence[Network], limits: Confinement) -> None:
    """PermissionDenied naming the quota if ``network`` would take the owner past one."""
    uid = limits.caller.uid
    if len(owned) + 1 > limits.max_networks:
        raise PermissionDenied(
            f'creating network "{network.name}": uid {uid} owns {len(owned)} networks; quota '
            f"policy.rootless_max_networks is {limits.max_networks}",
            field="policy.rootless_max_networks",
            value=limits.max_networks,
        )
    held = sum(ipv4_size(n) for n in owned)
    wanted = ipv4_size(network)
    if held + wanted > limits.max_addresses:
        subnets = ", ".join(str(s.subnet) for s in network.subnets if s.version == 4)
        raise PermissionDenied(
            f'creating network "{network.name}" ({subnets}: {wanted} addresses): uid {uid} '
            f"owns {held} IPv4 addresses; quota policy.rootless_max_addresses is "
            f"{limits.max_addresses}",
            field="policy.rootless_max_addresses",
            value=limits.max_addresses,
        )


def check_options(network: Network) -> None:
    """PermissionDenied naming the first option an owner may not set."""
    for key in sorted(network.options):
        if DOCKER_ALIASES.get(key, key) not in OWNER_OPTIONS:
            raise PermissionDenied(
                f'creating network "{network.name}": option {key!r} is reserved to root and '
                f"policy.admins; rootless owners may set {', '.join(sorted(OWNER_OPTIONS))}",
                field=f"options.{key}",
                value=network.options[key],
            )


def check_subnets(
    network: Network,
    pools: Sequence[DefaultPool],
    ula: ipaddress.IPv6Network,
    host_routes: Iterable[IPNetwork],
) -> None:
    """PermissionDenied unless every subnet lies in a default pool (v6: or the ULA prefix).

    A subnet must also be no larger than the pool's block and overlap no host route (default
    routes aside): a rootless user must not be able to claim an address range the host
    reaches elsewhere, which would divert the host's own traffic to their bridge.
    """
    routes = [r for r in host_routes if r.prefixlen > 0]
    for sub in network.subnets:
        net = sub.subnet
        family = [p for p in pools if p.base.version == net.version]
        if net.version == 6 and not family:
            family = [DefaultPool(ula, 64)]
        inside = [p for p in family if net.subnet_of(p.base)]  # type: ignore[arg-type]
        if not any(net.prefixlen >= p.size for p in inside):
            shown = ", ".join(str(p) for p in family) or "none"
            raise PermissionDenied(
                f'creating network "{network.name}": subnet {net} is not a block of the '
                f"default address pools ({shown}); rootless owners may only use those",
                field="subnet",
                value=str(net),
            )
        for route in routes:
            if route.version == net.version and route.overlaps(net):
                raise PermissionDenied(
                    f'creating network "{network.name}": subnet {net} overlaps host route {route}',
                    field="subnet",
                    value=str(net),
                )


def unprivileged_port_start(path: Path = PORT_START_SYSCTL) -> int:
    """The kernel's first unprivileged port in the daemon's namespace (1024 if unreadable)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_PORT_START


def check_ports(ports: Iterable[PortMapping], start: int) -> None:
    """PermissionDenied for the first published host port below ``start``."""
    for pm in ports:
        if pm.host_port < start:
            raise PermissionDenied(
                f"publishing host port {pm.host_port}/{pm.protocol}: ports below {start} "
                "(net.ipv4.ip_unprivileged_port_start) are reserved to root and policy.admins",
                field="publish.host_port",
                value=pm.host_port,
            )


def check_port_quota(container_id: str, wanted: int, held: int, limits: Confinement) -> None:
    """PermissionDenied naming the quota if publishing ``wanted`` more ports exceeds one."""
    uid = limits.caller.uid
    if wanted > limits.max_ports_per_request:
        raise PermissionDenied(
            f"publishing {wanted} ports for container {container_id!r}: a request may publish "
            f"at most {limits.max_ports_per_request} (policy.rootless_max_ports_per_request)",
            field="policy.rootless_max_ports_per_request",
            value=limits.max_ports_per_request,
        )
    if held + wanted > limits.max_ports:
        raise PermissionDenied(
            f"publishing {wanted} ports for container {container_id!r}: uid {uid} holds {held} "
            f"published ports; quota policy.rootless_max_ports is {limits.max_ports}",
            field="policy.rootless_max_ports",
            value=limits.max_ports,
        )


AttachmentKey = tuple[str, str, str]  # network id, container id, ifname
# Ports of attaches in flight, per service and uid: counted by the quota until the attach ends.
_PENDING: weakref.WeakKeyDictionary[Any, dict[int, dict[AttachmentKey, int]]] = (
    weakref.WeakKeyDictionary()
)


class OwnerScope:
    """The service as a rootless owner may use it (see the module docstring).

    Offers the service methods the API handlers and the CNI handler call, confined to the
    owner's networks. Built per request; remembers the namespace paths it has verified.
    """

    def __init__(
        self,
        service: Service,
        limits: Confinement,
        *,
        verify_netns: Callable[[str, Caller, Iterable[int]], int] = nsowner.verify,
        groups_of: Callable[[Caller], frozenset[int]] = caller_groups,
        port_start: Callable[[], int] = unprivileged_port_start,
        host_addresses: Callable[[], Iterable[IPAddress]] = host_addresses,
    ) -> None:
        self._svc = service
        self.limits = limits
        self.caller = limits.caller
        self._verify_netns = verify_netns
        self._groups_of = groups_of
        self._port_start = port_start
        self._host_addresses = host_addresses
        self._host_now: list[IPAddress] = []  # the host's addresses, read before an admission
        self._verified: dict[str, int] = {}  # path -> inode of the namespace verified

    # --- what the service shows, confined ---------------------------------------------------

    @property
    def ready(self) -> bool:
        """The service's readiness."""
        return self._svc.ready

    @property
    def firewall(self) -> Any:
        """The service's firewall (its name is shown in the status)."""
        return self._svc.firewall

    @property
    def dns(self) -> Any:
        """The service's DNS sink (inspect shows a network's records)."""
        return self._svc.dns

    def owns(self, network: Network) -> bool:
        """True if the network was created by this owner's uid."""
        return network.owner_uid == self.caller.uid

    def list_networks(self) -> list[Network]:
        """The owner's networks by creation time."""
        return [n for n in self._svc.list_networks() if self.owns(n)]

    def find_network(self, name_or_id: str) -> Network:
        """One of the owner's networks by name, id or unique id prefix; NotFound otherwise.

        Another user's network is "not found", exactly as a missing one: its existence is not
        confirmed (though a create with its name still meets a Conflict: names are global).
        """
        from ..service import match_network

        return match_network(self.list_networks(), name_or_id)

    async def get_network(self, name: str) -> Network:
        """CniBackend: one of the owner's networks."""
        return self.find_network(name)

    def endpoints(self, network: Network) -> list[Endpoint]:
        """Endpoints of a network found through this scope."""
        return self._svc.endpoints(self.find_network(network.id))

    def find_endpoints(self, network: Network, container_id: str) -> list[Endpoint]:
        """Endpoints of one container on one of the owner's networks."""
        return self._svc.find_endpoints(self.find_network(network.id), container_id)

    def utilisation(self, network: Network) -> dict[str, tuple[int, int]]:
        """IPAM use of one of the owner's networks."""
        return self._svc.utilisation(self.find_network(network.id))

    def host_interface(self, network: Network) -> str:
        """The host interface (bridge) of one of the owner's networks."""
        return self._svc.host_interface(network)

    def driver(self, network: Network) -> Driver:
        """The driver of one of the owner's networks."""
        return self._svc.driver(network)

    def dns_for(self, network: Network) -> dict[str, list[str]]:
        """resolv.conf contents for a container on the network."""
        return self._svc.dns_for(network)

    async def status(self) -> None:
        """CniBackend: Unavailable until the service is ready."""
        await self._svc.status()

    # --- networks ------------------------------------------------------------------------------

    def _admit(self, network: Network, existing: list[Network], routes: list[IPNetwork]) -> None:
        """The service's admission hook: runs under its global lock, before any kernel work."""
        check_options(network)
        check_subnets(network, self._svc.pools, self._svc.ula, routes)
        check_quota(network, [n for n in existing if self.owns(n)], self.limits)
        servers = network.opts.dns_servers
        if servers:
            check_upstreams(
                "options.dns_servers",
                [str(server) for server in servers],
                self._host_now,
                self._foreign_subnets(existing),
            )

    def _foreign_subnets(self, networks: Iterable[Network]) -> list[IPNetwork]:
        """Subnets of the networks that are not this owner's (no upstream may lie there)."""
        return [s.subnet for n in networks if not self.owns(n) for s in n.subnets]

    async def create_network(self, spec: NetworkSpec, caller: Caller | None = None) -> Network:
        """Create a network owned by this owner, within the restrictions and quotas."""
        if spec.options.get("dns_servers"):
            # Read here, off the event loop: the admission hook runs on it, under the lock.
            self._host_now = await asyncio.to_thread(lambda: list(self._host_addresses()))
        try:
            return await self._svc.create_network(spec, self.caller, admit=self._admit)
        except Conflict as exc:
            raise network_conflict(exc, spec.name, self._svc.list_networks(), self.owns) from None

    async def ensure_network(self, spec: NetworkSpec) -> Network:
        """CniBackend: the owner's network called ``spec.name``, created if missing."""
        try:
            return self.find_network(spec.name)
        except NotFound:
            pass
        try:
            return await self.create_network(spec)
        except Conflict as exc:
            try:
                return self.find_network(spec.name)  # made meanwhile by our own parallel ADD
            except NotFound:
                raise exc from None  # the name is another user's

    async def remove_network(self, name: str) -> Network:
        """Remove one of the owner's networks (without endpoints)."""
        return await self._svc.remove_network(self.find_network(name).id)

    async def prune(self) -> list[str]:
        """Remove the owner's networks without endpoints; returns their names."""
        return await self._svc.prune(self.list_networks())

    # --- endpoints -------------------------------------------------------------------------

    def _verify(self, path: str) -> int:
        """The inode of the caller's own namespace at ``path`` (checked once per request)."""
        if path not in self._verified:
            self._verified[path] = self._verify_netns(
                path, self.caller, self._groups_of(self.caller)
            )
        return self._verified[path]

    def check_netns(self, path: str) -> None:
        """CniBackend: a usable network namespace (ownership is verified by :meth:`attach`,
        off the event loop: the open-as-caller check starts a process)."""
        self._svc.check_netns(path)

    async def attach(
        self, req: AttachRequest, *, plumb: bool = True, caller: Caller | None = None
    ) -> tuple[Network, Endpoint]:
        """Attach a namespace the owner owns to one of its networks."""
        net = self.find_network(req.network)
        check_ports(req.port_mappings, self._port_start())
        check_port_quota(req.container_id, len(req.port_mappings), 0, self.limits)
        if req.dns_servers:
            addresses = await asyncio.to_thread(lambda: list(self._host_addresses()))
            foreign = self._foreign_subnets(self._svc.list_networks())
            check_upstreams("dns_servers", req.dns_servers, addresses, foreign)
        inode = 0
        if plumb:
            self._svc.check_netns(req.netns)
            inode = await asyncio.to_thread(self._verify, req.netns)
        # Pinned: the driver refuses the path if it no longer leads to the verified namespace.
        req = dataclasses.replace(req, network=net.id, netns_inode=inode)
        key = (net.id, req.container_id, req.ifname)
        # Check and reserve with no await in between: the event loop makes it atomic.
        pending = _PENDING.setdefault(self._svc, {}).setdefault(self.caller.uid, {})
        if req.port_mappings:
            held = self.published_ports(skip=set(pending)) + sum(pending.values())
            check_port_quota(req.container_id, len(req.port_mappings), held, self.limits)
            pending[key] = pending.get(key, 0) + len(req.port_mappings)
        try:
            return await self._svc.attach(req, plumb=plumb, caller=self.caller)
        except Conflict as exc:
            if exc.field != "port_mappings":
                raise
            every = [(n, e) for n in self._svc.list_networks() for e in self._svc.endpoints(n)]
            raise port_conflict(exc, req.port_mappings, every, self.owns, key) from None
        finally:
            if req.port_mappings:
                pending[key] -= len(req.port_mappings)
                if pending[key] <= 0:
                    del pending[key]

    def published_ports(
        self, skip: set[AttachmentKey] | frozenset[AttachmentKey] = frozenset()
    ) -> int:
        """Port mappings held by this owner's endpoints (``skip``: attaches in flight)."""
        return sum(
            len(ep.port_mappings)
            for n in self._svc.list_networks()
            for ep in self._svc.endpoints(n)
            if ep.owner_uid == self.caller.uid
            and (ep.network_id, ep.container_id, ep.ifname) not in skip
        )

    async def detach(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        """Idempotent detach from one of the owner's networks; others' are "not there".

        A namespace path other than the recorded one is used only if the owner owns it: the
        driver may delete an interface by name in it.
        """
        try:
            net = self.find_network(network)
        except NotFound:
            return
        if netns:
            recorded = {e.netns for e in self._svc.find_endpoints(net, container_id)}
            if netns not in recorded:
                try:
                    await asyncio.to_thread(self._verify, netns)
                except NetdError:
                    netns = None  # not theirs or not usable: tear down by the record alone
        await self._svc.detach(net.id, container_id, ifname, netns)

    async def check(self, network: str, container_id: str, ifname: str, netns: str) -> None:
        """CNI CHECK on one of the owner's networks, in a namespace the owner owns."""
        net = self.find_network(network)
        if netns:
            await asyncio.to_thread(self._verify, netns)
        await self._svc.check(net.id, container_id, ifname, netns)

    async def gc(self, network: str, valid: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """CNI GC on one of the owner's networks (another user's is left alone)."""
        try:
            net = self.find_network(network)
        except NotFound:
            return []
        return await self._svc.gc(net.id, valid)
