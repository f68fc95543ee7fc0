"""Calling the firewall seam from tests, and a fake firewall that keeps its state in memory.

Every test that hands a network to a firewall goes through :func:`fw_ensure`,
:func:`fw_remove` and :func:`fw_sync`, so a change to how the firewall learns a network's host
interface (the one its driver names: the bridge) is one edit here, not one per test.

:class:`FakeFirewall` keeps the desired state with the real pure logic
(:class:`netd.firewall.state.DesiredState`: policies, port claims and conflicts) and touches no
kernel; it records the methods called, in order, and can be told that the "kernel" lost its
rules. It passes the firewall contract suite (tests/unit/test_contract_firewall.py).
"""

from __future__ import annotations

import json
from typing import Any

from netd.errors import NotFound
from netd.firewall.base import Firewall
from netd.firewall.drift import Drift
from netd.firewall.policy import build_policy
from netd.firewall.state import DesiredState, endpoint_key
from netd.model import Endpoint, Network, to_json
from netd.names import bridge_name


def host_interface(network: Network) -> str:
    """The host interface the firewall keys ``network`` on (the bridge driver's bridge)."""
    return bridge_name(network.id)


def fw_ensure(fw: Firewall, network: Network) -> None:
    """``fw.ensure_network`` for ``network`` on its host interface."""
    fw.ensure_network(network, host_interface(network))


def fw_remove(fw: Firewall, network: Network) -> None:
    """``fw.remove_network`` for ``network`` on its host interface."""
    fw.remove_network(network, host_interface(network))


def fw_sync(fw: Firewall, networks: list[Network], endpoints: list[Endpoint]) -> None:
    """``fw.sync`` of ``networks`` (each on its host interface) and ``endpoints``."""
    fw.sync([(n, host_interface(n)) for n in networks], endpoints)


class FakeFirewall:
    """Implements :class:`netd.firewall.base.Firewall` in memory; ``calls`` lists method names."""

    name = "fake"
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.state = DesiredState()
        self.damaged = False  # the "kernel" lost the ruleset: check() is False until repair()

    def ensure_network(self, network: Network, iface: str) -> None:
        """Record the network's policy."""
        self.calls.append("ensure_network")
        self.state.networks[network.id] = (network, build_policy(network, iface))

    def remove_network(self, network: Network, iface: str) -> None:
        """Forget the network and its endpoints."""
        self.calls.append("remove_network")
        for ep in self.state.endpoints_of(network.id):
            self.state.drop_endpoint(endpoint_key(ep))
        self.state.networks.pop(network.id, None)

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Claim the endpoint's ports; NotFound for an unknown network, Conflict on a clash."""
        self.calls.append("add_endpoint")
        if network.id not in self.state.networks:
            raise NotFound(f"network {network.id[:12]} has no firewall rules yet")
        self.state.put_endpoint(endpoint, self.state.check_ports(endpoint))

    def remove_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Release the endpoint's ports; nothing if unknown."""
        self.calls.append("remove_endpoint")
        self.state.drop_endpoint(endpoint_key(endpoint))

    def sync(self, networks: list[tuple[Network, str]], endpoints: list[Endpoint]) -> None:
        """Replace the whole state (Conflict, changing nothing, if two endpoints clash)."""
        self.calls.append(f"sync {len(networks)} {len(endpoints)}")
        self.state = DesiredState.build(networks, endpoints)
        self.damaged = False

    def check(self) -> bool:
        """False after :attr:`damaged` was set, until repair or sync."""
        return not self.damaged

    def repair(self) -> None:
        """The "kernel" holds the state again."""
        self.calls.append("repair")
        self.damaged = False

    def drift(self) -> Drift:
        """Nothing drifts element by element here."""
        return Drift()

    def show(self) -> str:
        """The state as JSON lines: one per network, one per endpoint with its ports."""
        lines = [f"network {nid} {p.bridge}" for nid, (_, p) in sorted(self.state.networks.items())]
        lines += [
            f"endpoint {'/'.join(k)} {json.dumps(to_json(ep.port_mappings))}"
            for k, (ep, _) in sorted(self.state.endpoints.items())
        ]
        return "".join(line + "\n" for line in lines)

    def describe(self, network: Network) -> dict[str, Any]:
        """The backend's name and what it holds for ``network``."""
        policy = self.state.policy(network.id)
        return {
            "backend": self.name,
            "bridge": policy.bridge if policy else None,
            "endpoints": [ep.container_id for ep in self.state.endpoints_of(network.id)],
        }


_check: type[Firewall] = FakeFirewall  # mypy: FakeFirewall implements the Protocol
