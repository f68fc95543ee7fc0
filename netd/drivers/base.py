"""The network driver seam: a driver owns the data plane of one network type.

A driver turns finished records into kernel objects and back, and says what the rest of netd
needs to know about them. It never allocates addresses or touches the store: the service does
that and hands the driver finished records (after netavark's ``NetworkDriver`` trait, where the
driver is handed the firewall and returns what DNS needs, and the CNI plugins' shared
``ipam.ConfigureIface``). All kernel methods are blocking (netlink) and are called from a worker
thread.

What a driver declares (:class:`Capabilities`) decides what the service does around it: whether
the firewall sees its networks at all, whether published ports and ICC make sense, where its
containers' DNS is served, whether netd creates interfaces at all (an IPAM-only driver does
not), and whether a network lives on one host or spans several (``scope``, for the overlay of
the multi-host work). Nothing outside a driver asks which driver a network has.

What a driver reports (:meth:`Driver.inventory`) is every host-side kernel object it made, by
its deterministic tag (:mod:`netd.names`): reconcile finds orphans and missing objects by tag,
``netd recover`` rebuilds records from them, and ``netd graph`` draws them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..errors import InvalidInput
from ..model import Endpoint, IPAddress, Network
from ..options import DriverKeys

# Where a driver's containers find netd's DNS: on the network's gateway addresses in the host
# ("gateway": the bridge), on 127.0.0.11 inside each container's namespace ("netns": drivers
# whose containers cannot reach the host, macvlan), or nowhere ("none").
DnsPlacement = Literal["gateway", "netns", "none"]
# "local": a network exists on one host; "global": on every node of a cluster (overlay).
Scope = Literal["local", "global"]


@dataclass(frozen=True)
class Capabilities:
    """What a driver's networks support, and what the service must do around them."""

    plumbs: bool = True  # netd creates the endpoints' interfaces (False: IPAM only)
    firewall: bool = True  # traffic passes a host interface the firewall filters and NATs
    port_mappings: bool = True  # published ports can be DNATed to its containers
    icc: bool = True  # option icc (inter-container traffic on the network) is enforced
    host_interface: bool = True  # endpoints have a host-side interface (a veth)
    dns: DnsPlacement = "gateway"
    scope: Scope = "local"
    # Kernel link kinds the driver needs (e.g. "macvlan"); doctor reports the missing ones and
    # creating a network says which one this kernel lacks.
    kernel_features: tuple[str, ...] = ()


@dataclass
class EndpointStatus:
    """What CHECK found in the kernel for one endpoint: empty ``problems`` means healthy."""

    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CniInterface:
    """One entry of a CNI result's ``interfaces`` (SPEC.md "Result"): ``sandbox`` empty for a
    host-side interface."""

    name: str
    mac: str = ""
    sandbox: str = ""
    container: bool = False  # the interface the result's ``ips`` refer to

    def to_json(self) -> dict[str, str]:
        """The result's JSON object for this interface."""
        out = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.sandbox:
            out["sandbox"] = self.sandbox
        return out


class Driver(Protocol):
    """The data plane of one network type."""

    name: str
    capabilities: Capabilities
    # The option keys it takes (netd.options): the API document's options schema is built
    # from every driver's, and validate_options checks them.
    option_keys: DriverKeys

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """Normalised options; InvalidInput naming an unknown or bad option (``options.<key>``)."""
        ...

    def available(self) -> str:
        """Empty if this host's kernel can run the driver, else the missing feature, in words."""
        ...

    def host_interface(self, network: Network) -> str:
        """The host interface the network's traffic enters through (the bridge), which the
        firewall keys on; "" when the firewall does not see the network."""
        ...

    def endpoint_host_ifname(self, network: Network, container_id: str, ifname: str) -> str:
        """The deterministic host-side interface name of an endpoint; "" when it has none."""
        ...

    def ensure_network(self, network: Network) -> None:
        """Converge the network's kernel objects (bridge, parent link, gateway addresses)."""
        ...

    def teardown_network(self, network: Network) -> list[str]:
        """Remove the network's kernel objects; best effort, returns the failures."""
        ...

    def setup_endpoint(self, network: Network, endpoint: Endpoint) -> Endpoint:
        """Create the endpoint's interfaces, addresses and routes; returns it with MACs filled.

        On failure it undoes what it did and raises; nothing is left behind.
        """
        ...

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """Remove the endpoint's interfaces (host side even if the netns is gone); failures."""
        ...

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """Compare the kernel with the record: interface, addresses, routes."""
        ...

    def inventory(self) -> dict[str, str]:
        """``{tag: ifname}`` of every host-side kernel object of this driver (netd.names tags)."""
        ...

    def network_tags(self, network: Network) -> frozenset[str]:
        """Tags of the host-side objects ``network`` must have (missing: ensure_network)."""
        ...

    def endpoint_tags(self, network: Network, endpoint: Endpoint) -> frozenset[str]:
        """Tags of the host-side objects ``endpoint`` must have (none when it has none)."""
        ...

    def remove_object(self, ifname: str) -> bool:
        """Delete one of this driver's host-side objects found without a record; True if it
        was this driver's and is gone."""
        ...

    def cni_interfaces(self, network: Network, endpoint: Endpoint) -> list[CniInterface]:
        """The driver's part of a CNI ADD result: the interfaces it made, host side first."""
        ...

    def describe(self, network: Network, endpoints: list[Endpoint]) -> dict[str, Any]:
        """What the kernel holds for ``network`` now (links, states), read-only, for inspect."""
        ...

    def close(self) -> None:
        """Release sockets and threads (the daemon is stopping)."""
        ...


def not_plumbed(network: Network) -> InvalidInput:
    """The error for a request that would have netd plumb an interface on a network whose
    driver makes none (``Capabilities.plumbs`` False: an IPAM-only network)."""
    return InvalidInput(
        "network",
        network.name,
        f"is an IPAM-only network (driver {network.driver}): netd allocates its addresses but "
        "another CNI plugin creates its interfaces; attach containers through that plugin, or "
        "use a bridge network",
    )


def default_gateways(network: Network, endpoint: Endpoint) -> list[IPAddress]:
    """One gateway per family: that of the first subnet holding one of the endpoint's addresses.

    Internal networks get none: nothing leaves them, so no default route points out. Shared by
    every driver that routes a container through a gateway (bridge, macvlan, plugins' records).
    """
    if network.internal:
        return []
    out: dict[int, IPAddress] = {}
    for iface in endpoint.addresses:
        for subnet in network.subnets:
            if subnet.gateway and iface.ip in subnet.subnet and iface.version not in out:
                out[iface.version] = subnet.gateway
    return [out[v] for v in sorted(out)]


class NoKernelObjects:
    """Mixin for drivers that make no host-side kernel object (IPAM-only, null): an empty
    inventory, nothing expected, nothing to remove."""

    def inventory(self) -> dict[str, str]:
        """Nothing in the kernel."""
        return {}

    def network_tags(self, network: Network) -> frozenset[str]:
        """Nothing expected."""
        return frozenset()

    def endpoint_tags(self, network: Network, endpoint: Endpoint) -> frozenset[str]:
        """Nothing expected."""
        return frozenset()

    def remove_object(self, ifname: str) -> bool:
        """Owns no object."""
        return False
