"""The ``ipam`` driver: networks whose addresses netd allocates and whose links another plugin owns.

A CNI config that names another main plugin with ``"ipam": {"type": "netd"}`` (the reference
``bridge``, ``macvlan``, ``ptp``...) makes netd an IPAM plugin: it allocates, records and releases
addresses, nothing else. Such a network must hold no kernel object of netd's: no bridge (the main
plugin makes its own, holding the same gateway address; a second bridge with that address
breaks traffic on the first wherever br_netfilter is loaded), no veth, no firewall chain, no DNS
listener. This driver is how the rest of netd knows: its kernel methods do nothing, attaching a
namespace through it is refused, and :func:`is_ipam_only` tells the service, the reconciler and
inspect to leave the firewall, the bridge and DNS out.

It does not allocate anything itself (the service's IPAM does, as for every network).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import InvalidInput
from ..model import Endpoint, Network
from ..options import parse_bool
from .base import EndpointStatus

IPAM_DRIVER = "ipam"


def is_ipam_only(network: Network) -> bool:
    """True when netd only allocates addresses on ``network`` (no kernel objects of its own)."""
    return network.driver == IPAM_DRIVER


def refuse_plumbing(network: Network) -> InvalidInput:
    """The error for a request that would have netd plumb an interface on an IPAM-only network."""
    return InvalidInput(
        "network",
        network.name,
        "is an IPAM-only network (driver ipam): netd allocates its addresses but another CNI "
        "plugin creates its interfaces; attach containers through that plugin, or use a bridge "
        "network",
    )


class IpamOnlyDriver:
    """Implements :class:`netd.drivers.base.Driver` for networks another plugin plumbs."""

    name = IPAM_DRIVER

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """No options but ``dns=false``: netd serves no DNS where it owns no address.

        Bridge options (``bridge``, ``mtu``, ...) are the main plugin's business; accepting them
        here would suggest netd applies them.
        """
        for key, value in options.items():
            if key == "dns" and isinstance(value, str) and parse_bool(value) is False:
                continue
            rule = (
                "netd serves no DNS on an IPAM-only network (no address of its own to listen on)"
                if key == "dns"
                else "an IPAM-only network takes no driver options: the main CNI plugin owns "
                "its interfaces"
            )
            raise InvalidInput(f"options.{key}", value, rule)
        return {"dns": "false"}

    def ensure_network(self, network: Network) -> None:
        """Nothing: the main plugin makes the network's links."""

    def teardown_network(self, network: Network) -> list[str]:
        """Nothing to remove."""
        return []

    def setup_endpoint(self, network: Network, endpoint: Endpoint) -> Endpoint:
        """Refused: netd does not plumb interfaces on an IPAM-only network."""
        raise refuse_plumbing(network)

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """Nothing: the main plugin removes its interfaces on DEL."""
        return []

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """Always healthy: netd checks only the allocation of such endpoints."""
        return EndpointStatus()
