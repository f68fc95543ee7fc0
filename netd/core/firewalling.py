"""The firewall as the service sees it: only networks whose driver routes through the host.

A driver declares whether its networks' traffic passes a host interface that netd filters and
NATs (``Capabilities.firewall``: the bridge does; macvlan, whose containers sit on the parent's
LAN, and IPAM-only networks do not) and names that interface (``Driver.host_interface``). This
wrapper is the one place that reads those two answers, so the service never asks which driver a
network has, and the firewall backends (:mod:`netd.firewall`) only ever see networks they can
act on.
"""

from __future__ import annotations

from ..firewall.base import Firewall
from ..model import Endpoint, Network
from .state import State


class Firewalling:
    """Forwards to the firewall backend for networks it applies to; nothing for the others."""

    def __init__(self, state: State, backend: Firewall) -> None:
        self.state = state
        self.backend = backend

    def applies(self, network: Network) -> bool:
        """Whether the firewall filters ``network``'s traffic."""
        return self.state.caps(network).firewall

    def iface(self, network: Network) -> str:
        """The host interface the firewall keys ``network`` on ("" when it does not apply)."""
        return self.state.driver(network).host_interface(network) if self.applies(network) else ""

    def ensure_network(self, network: Network) -> None:
        """Add the network's rules (blocking)."""
        if self.applies(network):
            self.backend.ensure_network(network, self.iface(network))

    def remove_network(self, network: Network) -> None:
        """Remove the network's rules (blocking)."""
        if self.applies(network):
            self.backend.remove_network(network, self.iface(network))

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Add the endpoint's elements: published ports, ICC (blocking)."""
        if self.applies(network):
            self.backend.add_endpoint(network, endpoint)

    def remove_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """Remove the endpoint's elements (blocking); returns no failures (it raises)."""
        if self.applies(network):
            self.backend.remove_endpoint(network, endpoint)
        return []

    def sync(self) -> None:
        """Rebuild the whole ruleset from the records (blocking; start-up)."""
        nets = [n for n in self.state.networks.values() if self.applies(n)]
        eps = [
            ep
            for n in nets
            for ep in self.state.endpoints.get(n.id, {}).values()
            if ep.state != "gone"  # reaped: its ports stay withdrawn
        ]
        self.backend.sync([(n, self.iface(n)) for n in nets], eps)
