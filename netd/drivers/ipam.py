"""The ``ipam`` driver: networks whose addresses netd allocates and whose links another plugin owns.

A CNI config that names another main plugin with ``"ipam": {"type": "netd"}`` (the reference
``bridge``, ``macvlan``, ``ptp``...) makes netd an IPAM plugin: it allocates, records and releases
addresses, nothing else. Such a network must hold no kernel object of netd's: no bridge (the main
plugin makes its own, holding the same gateway address; a second bridge with that address
breaks traffic on the first wherever br_netfilter is loaded), no veth, no firewall chain, no DNS
listener. This driver is how the rest of netd knows: its capabilities say it plumbs nothing, has
no firewall and no DNS, so the service, the reconciler and inspect leave all three out, and
attaching a namespace through it is refused.

It does not allocate anything itself (the service's IPAM does, as for every network).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput
from ..model import Endpoint, Network
from ..options import DriverKeys, parse_bool
from .base import Capabilities, CniInterface, EndpointStatus, NoKernelObjects, not_plumbed

IPAM_DRIVER = "ipam"


class IpamOnlyDriver(NoKernelObjects):
    """Implements :class:`netd.drivers.base.Driver` for networks another plugin plumbs."""

    name = IPAM_DRIVER
    capabilities = Capabilities(
        plumbs=False, firewall=False, port_mappings=False, icc=False, host_interface=False,
        dns="none",
    )  # fmt: skip
    # Only ``dns``, and only false (validate_options says why the others are refused).
    option_keys = DriverKeys(IPAM_DRIVER, firewall=False, network=("dns",))

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
        raise not_plumbed(network)

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """Nothing: the main plugin removes its interfaces on DEL."""
        return []

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """Always healthy: netd checks only the allocation of such endpoints."""
        return EndpointStatus()

    def available(self) -> str:
        """Always: it needs nothing from the kernel."""
        return ""

    def host_interface(self, network: Network) -> str:
        """None: the main plugin's links are not netd's."""
        return ""

    def endpoint_host_ifname(self, network: Network, container_id: str, ifname: str) -> str:
        """None."""
        return ""

    def cni_interfaces(self, network: Network, endpoint: Endpoint) -> list[CniInterface]:
        """None: an IPAM plugin's result has no interfaces (the main plugin adds them)."""
        return []

    def describe(self, network: Network, endpoints: list[Endpoint]) -> dict[str, Any]:
        """Says who owns the links."""
        # Nothing of netd's exists in the kernel for it: say so rather than report "missing".
        return {
            "ipam_only": True,
            "note": "IPAM-only network: netd allocates and records its addresses; the main CNI "
            "plugin owns its interfaces (no bridge, veth, firewall rules or DNS of netd's)",
        }

    def close(self) -> None:
        """Nothing to release."""
