"""The firewall seam: NAT, isolation, internal networks and published ports.

Backends (nftables, iptables, none) get the whole desired state as records and converge the
kernel to it; the ruleset is always derivable from netd's state. Methods are blocking and are
called from a worker thread while the service holds the affected network's lock.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..model import Endpoint, Network
from .drift import Drift


class Firewall(Protocol):
    """Packet filtering and NAT for netd's networks."""

    name: str
    # Optional abilities ("anti_spoof": source-address validation on bridge ports); a network
    # option that needs one the backend lacks is refused at create.
    capabilities: frozenset[str]

    def ensure_network(self, network: Network, iface: str) -> None:
        """Add the network's rules/set elements (masquerade, isolation, internal).

        ``iface`` is the host interface the network's traffic enters through, as its driver
        names it (``Driver.host_interface``: the bridge). Only networks whose driver routes
        through the host reach the firewall (``Capabilities.firewall``, netd.core.firewalling);
        the nftables set that holds these interfaces keeps its historical name ``bridges`` so
        rulesets written by older versions are adopted unchanged.
        """
        ...

    def remove_network(self, network: Network, iface: str) -> None:
        """Remove everything the network owns."""
        ...

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Add the endpoint's elements (published ports, ICC); Conflict if a host port is taken."""
        ...

    def remove_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Remove the endpoint's elements; no error if absent."""
        ...

    def sync(self, networks: list[tuple[Network, str]], endpoints: list[Endpoint]) -> None:
        """Rebuild the whole ruleset from state in one transaction (start-up, repair):
        ``networks`` are (network, host interface) pairs."""
        ...

    def check(self) -> bool:
        """True if the kernel still holds the ruleset last applied (self-repair asks this)."""
        ...

    def repair(self) -> None:
        """Re-apply the ruleset last applied."""
        ...

    def drift(self) -> Drift:
        """Networks' and endpoints' elements/rules the kernel lost (the periodic pass asks)."""
        ...

    def show(self) -> str:
        """The live ruleset of netd's tables/chains, for `netd firewall show`."""
        ...

    def describe(self, network: Network) -> dict[str, Any]:
        """What the kernel holds for ``network`` now (chains, elements/rules), read-only."""
        ...


class NullFirewall:
    """``firewall_backend = "none"``: the operator owns the firewall; netd adds no rules."""

    name = "none"
    capabilities: frozenset[str] = frozenset()

    def ensure_network(self, network: Network, iface: str) -> None:
        """Nothing to do."""

    def remove_network(self, network: Network, iface: str) -> None:
        """Nothing to do."""

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Nothing to do."""

    def remove_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Nothing to do."""

    def sync(self, networks: list[tuple[Network, str]], endpoints: list[Endpoint]) -> None:
        """Nothing to do."""

    def check(self) -> bool:
        """Nothing to check."""
        return True

    def repair(self) -> None:
        """Nothing to repair."""

    def drift(self) -> Drift:
        """Nothing can drift."""
        return Drift()

    def show(self) -> str:
        """Says who owns the firewall."""
        return "# firewall backend none: netd adds no rules; the operator owns the firewall\n"

    def describe(self, network: Network) -> dict[str, Any]:
        """No rules to describe."""
        return {"backend": self.name, "note": "netd adds no rules; the operator owns the firewall"}
