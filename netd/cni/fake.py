"""An in-memory CniBackend for tests of the CNI handler, the plugin and the API route.

It keeps the contract of ``netd.cni.backend.CniBackend`` (the same errors for the same
situations) with dictionaries instead of a store and a kernel: addresses are handed out in
order, MACs are derived from the attachment key, ports collide like published ports do. It is
not used by the daemon.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field, replace

from ..drivers.base import Driver
from ..drivers.ipam import IPAM_DRIVER, IpamOnlyDriver
from ..drivers.null import NullDriver
from ..errors import AddressExhausted, Conflict, InvalidInput, KernelError, NotFound, Unavailable
from ..model import AttachRequest, Endpoint, Network, NetworkSpec, Subnet
from ..names import host_veth_name
from ..options import stored_options

DEFAULT_SUBNET = "10.99.0.0/24"


def _mac(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


@dataclass
class FakeCniBackend:
    """Networks and endpoints in dictionaries; ``ready`` and ``broken`` steer STATUS and CHECK."""

    networks: dict[str, Network] = field(default_factory=dict)
    endpoints: dict[tuple[str, str, str], Endpoint] = field(default_factory=dict)
    plumbed: dict[tuple[str, str, str], bool] = field(default_factory=dict)
    ready: bool = True
    broken: dict[tuple[str, str], str] = field(default_factory=dict)  # key -> CHECK problem
    attach_error: Exception | None = None  # raised by the next attach, then cleared
    calls: list[tuple[str, object]] = field(default_factory=list)
    _null: NullDriver = field(default_factory=NullDriver)
    _ipam: IpamOnlyDriver = field(default_factory=IpamOnlyDriver)

    def add_network(self, network: Network) -> Network:
        """Seed a network directly."""
        self.networks[network.name] = network
        return network

    async def get_network(self, name: str) -> Network:
        """The network called ``name``; NotFound otherwise."""
        self.calls.append(("get_network", name))
        try:
            return self.networks[name]
        except KeyError:
            raise NotFound(f"network {name!r} not found", field="network", value=name) from None

    async def ensure_network(self, spec: NetworkSpec) -> Network:
        """Create from ``spec`` (first host of each subnet as default gateway) unless it exists."""
        self.calls.append(("ensure_network", spec))
        if spec.name in self.networks:
            return self.networks[spec.name]
        subnets = []
        for req in spec.subnets:
            subnets.append(self._subnet(req.subnet or DEFAULT_SUBNET, req.gateway, req.ip_range))
        if not subnets:
            subnets.append(self._subnet(DEFAULT_SUBNET, None, None))
        for other in self.networks.values():
            for mine in subnets:
                for theirs in other.subnets:
                    if mine.subnet.overlaps(theirs.subnet):
                        raise Conflict(
                            f"subnet {mine.subnet} overlaps network {other.name!r}",
                            field="subnets",
                            value=str(mine.subnet),
                        )
        network = Network(
            id=hashlib.sha256(spec.name.encode()).hexdigest(),
            name=spec.name,
            driver=spec.driver,
            subnets=tuple(subnets),
            ipv6=any(s.version == 6 for s in subnets),
            internal=spec.internal,
            dns_enabled=stored_options(spec.options).dns,
            options=dict(spec.options),
            labels=dict(spec.labels),
        )
        return self.add_network(network)

    @staticmethod
    def _subnet(text: str, gateway: str | None, ip_range: str | None) -> Subnet:
        try:
            net = ipaddress.ip_network(text)
            gw = ipaddress.ip_address(gateway or str(next(iter(net.hosts()))))
        except ValueError as exc:
            raise InvalidInput("subnet", text, str(exc)) from exc
        if gw not in net:
            raise InvalidInput("gateway", gateway, f"not inside {net}")
        return Subnet(net, gw, ipaddress.ip_network(ip_range) if ip_range else None)

    async def attach(self, req: AttachRequest, *, plumb: bool = True) -> tuple[Network, Endpoint]:
        """Allocate one address per subnet (static ones first), record, "plumb"."""
        self.calls.append(("attach", (req, plumb)))
        if self.attach_error is not None:
            error, self.attach_error = self.attach_error, None
            raise error
        network = await self.get_network(req.network)
        key = (network.name, req.container_id, req.ifname)
        if key in self.endpoints:
            raise Conflict(
                f"container {req.container_id!r} is already attached to network "
                f"{network.name!r} as {req.ifname!r}",
                field="container_id",
                value=req.container_id,
            )
        for mapping in req.port_mappings:
            for ep in self.endpoints.values():
                if any(
                    (p.host_port, p.protocol) == (mapping.host_port, mapping.protocol)
                    for p in ep.port_mappings
                ):
                    raise Conflict(
                        f"publishing port {mapping.host_port}/{mapping.protocol}: in use",
                        field="port_mappings",
                        value=mapping.host_port,
                    )
        addresses = [self._allocate(network, subnet, req.static_ips) for subnet in network.subnets]
        endpoint = Endpoint(
            network_id=network.id,
            container_id=req.container_id,
            ifname=req.ifname,
            netns=req.netns,
            host_ifname=host_veth_name(network.id, req.container_id, req.ifname) if plumb else "",
            addresses=tuple(addresses),
            mac=(req.mac or _mac("c" + "/".join(key))) if plumb else None,
            host_mac=_mac("h" + "/".join(key)) if plumb else None,
            name=req.name,
            aliases=req.aliases,
            port_mappings=req.port_mappings,
            dns_servers=req.dns_servers,
            state="ready",
            origin=req.origin,
        )
        self.endpoints[key] = endpoint
        self.plumbed[key] = plumb
        return network, endpoint

    def _allocate(
        self, network: Network, subnet: Subnet, static: tuple[str, ...]
    ) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        taken = {a.ip for ep in self._of(network) for a in ep.addresses}
        for text in static:
            address = ipaddress.ip_address(text)
            if address in subnet.subnet:
                if address in taken or address == subnet.gateway:
                    raise Conflict(
                        f"allocating {address} in network {network.name!r}: in use",
                        field="static_ips",
                        value=text,
                    )
                return ipaddress.ip_interface(f"{address}/{subnet.subnet.prefixlen}")
        pool = subnet.ip_range or subnet.subnet
        for address in pool.hosts():
            if address not in taken and address != subnet.gateway:
                return ipaddress.ip_interface(f"{address}/{subnet.subnet.prefixlen}")
        raise AddressExhausted(f"no free address left in {subnet.subnet} of {network.name!r}")

    def _of(self, network: Network) -> list[Endpoint]:
        return [ep for (net, _, _), ep in self.endpoints.items() if net == network.name]

    async def detach(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        """Forget the endpoint; missing network or endpoint is fine."""
        self.calls.append(("detach", (network, container_id, ifname, netns)))
        self.endpoints.pop((network, container_id, ifname), None)
        self.plumbed.pop((network, container_id, ifname), None)

    async def check(self, network: str, container_id: str, ifname: str, netns: str) -> None:
        """NotFound for an unknown attachment, KernelError for one marked broken."""
        self.calls.append(("check", (network, container_id, ifname, netns)))
        net = await self.get_network(network)
        if (net.name, container_id, ifname) not in self.endpoints:
            raise NotFound(
                f"container {container_id!r} has no attachment {ifname!r} on network {network!r}",
                field="container_id",
                value=container_id,
            )
        problem = self.broken.get((container_id, ifname))
        if problem:
            raise KernelError(problem)

    async def gc(self, network: str, valid: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Drop CNI endpoints of ``network`` whose key is not in ``valid``."""
        self.calls.append(("gc", (network, frozenset(valid))))
        removed = []
        for key, ep in list(self.endpoints.items()):
            if key[0] == network and ep.origin == "cni" and ep.key not in valid:
                del self.endpoints[key]
                removed.append(ep.key)
        return removed

    async def status(self) -> None:
        """Unavailable unless ``ready``."""
        if not self.ready:
            raise Unavailable("netd is starting; try again")

    def dns_for(self, network: Network) -> dict[str, list[str]]:
        """The first gateway as nameserver, ``<network>.netd`` as search domain (DNS on)."""
        if not network.dns_enabled:
            return {"nameservers": [], "search": []}
        servers = [str(s.gateway) for s in network.subnets[:1] if s.gateway]
        return {"nameservers": servers, "search": [f"{network.name}.netd"]}

    def host_interface(self, network: Network) -> str:
        """Option ``bridge`` or the deterministic default ("" for an IPAM-only network)."""
        return self.driver(network).host_interface(network)

    def driver(self, network: Network) -> Driver:
        """A kernel-free driver standing in for the network's (IPAM-only stays IPAM-only)."""
        if network.driver == IPAM_DRIVER:
            return self._ipam
        return self._null

    def check_netns(self, path: str) -> None:
        """Only absolute paths (the real check opens the namespace file)."""
        if not path.startswith("/"):
            raise InvalidInput("netns", path, "must be an absolute path")

    def endpoint(self, network: str, container_id: str, ifname: str) -> Endpoint:
        """The recorded endpoint (tests)."""
        return self.endpoints[(network, container_id, ifname)]

    def update_network(self, name: str, **changes: object) -> None:
        """Change a seeded network's fields (tests of conflicting definitions)."""
        self.networks[name] = replace(self.networks[name], **changes)  # type: ignore[arg-type]
