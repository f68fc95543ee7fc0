"""The network driver seam: the kernel plumbing of one network type (bridge first).

A driver turns records into kernel objects and back. It never allocates addresses or touches
the store; the service does that and hands the driver finished records. All methods are
blocking (netlink) and are called from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..model import Endpoint, Network


@dataclass
class EndpointStatus:
    """What CHECK found in the kernel for one endpoint: empty ``problems`` means healthy."""

    problems: list[str] = field(default_factory=list)


class Driver(Protocol):
    """Kernel plumbing of one driver type."""

    name: str

    def validate_options(self, options: dict[str, str]) -> dict[str, str]:
        """Normalised driver options; InvalidInput naming an unknown or bad option."""
        ...

    def ensure_network(self, network: Network) -> None:
        """Converge the network's kernel objects (bridge, gateway addresses, sysctls)."""
        ...

    def teardown_network(self, network: Network) -> list[str]:
        """Remove the network's kernel objects; best effort, returns the failures."""
        ...

    def setup_endpoint(self, network: Network, endpoint: Endpoint) -> Endpoint:
        """Create the endpoint's interfaces, addresses and routes; returns it with MAC filled.

        On failure it undoes what it did and raises; nothing is left behind.
        """
        ...

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """Remove the endpoint's interfaces (host side even if the netns is gone); failures."""
        ...

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """Compare the kernel with the record: interface, addresses, routes."""
        ...
