"""The firewall's copy of the desired state: networks, endpoints and who holds each host port.

A backend keeps one :class:`DesiredState`, updated only after the kernel accepted a change, so
it always describes what the ruleset should contain. It answers "is this host port taken, and
by whom?" without reading the kernel, and it is what a repair re-applies after someone flushed
netd's rules. It does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Endpoint, Network
from .policy import NetworkPolicy, PortRule, build_policy, check_conflicts, endpoint_ports

EndpointKey = tuple[str, str, str]  # (network id, container id, ifname)


def endpoint_key(endpoint: Endpoint) -> EndpointKey:
    """The identity of an endpoint inside the firewall state."""
    return (endpoint.network_id, endpoint.container_id, endpoint.ifname)


@dataclass
class DesiredState:
    """Networks (with their policies) and endpoints the ruleset must reflect."""

    networks: dict[str, tuple[Network, NetworkPolicy]] = field(default_factory=dict)
    endpoints: dict[EndpointKey, tuple[Endpoint, tuple[PortRule, ...]]] = field(
        default_factory=dict
    )
    # (family, protocol, host port) -> the rules holding it: the conflict check stays O(1).
    claims: dict[tuple[int, str, int], list[PortRule]] = field(default_factory=dict)

    @classmethod
    def build(cls, networks: list[tuple[Network, str]], endpoints: list[Endpoint]) -> DesiredState:
        """Validate a whole state (as ``sync`` receives it); Conflict if two endpoints clash.

        Endpoints of networks not in ``networks`` are ignored: they have nothing to attach to.
        """
        state = cls()
        for network, bridge in networks:
            state.networks[network.id] = (network, build_policy(network, bridge))
        for ep in endpoints:
            if ep.network_id in state.networks:
                state.put_endpoint(ep, state.check_ports(ep))
        return state

    def copy(self) -> DesiredState:
        """A copy that can be changed without touching this one (records are immutable)."""
        return DesiredState(
            dict(self.networks),
            dict(self.endpoints),
            {k: list(v) for k, v in self.claims.items()},
        )

    def policy(self, network_id: str) -> NetworkPolicy | None:
        """The policy of a known network."""
        entry = self.networks.get(network_id)
        return entry[1] if entry else None

    def policies(self) -> list[NetworkPolicy]:
        """All network policies, in a stable order (by network id)."""
        return [self.networks[k][1] for k in sorted(self.networks)]

    def endpoints_of(self, network_id: str) -> list[Endpoint]:
        """Endpoints on one network, in a stable order."""
        return [ep for key, (ep, _) in sorted(self.endpoints.items()) if key[0] == network_id]

    def check_ports(self, endpoint: Endpoint) -> tuple[PortRule, ...]:
        """The endpoint's port rules; Conflict if another endpoint holds one of its host ports."""
        policy = self.policy(endpoint.network_id)
        rules = endpoint_ports(policy, endpoint) if policy else ()
        old = self.endpoints.get(endpoint_key(endpoint))
        mine = set(old[1]) if old else set()
        held = [
            (other, other.owner)
            for rule in rules
            for other in self.claims.get(rule.claim, ())
            if other not in mine
        ]
        check_conflicts(rules, held)
        return rules

    def put_endpoint(self, endpoint: Endpoint, rules: tuple[PortRule, ...]) -> None:
        """Record an endpoint with its (already checked) port rules, replacing an older copy."""
        self.drop_endpoint(endpoint_key(endpoint))
        self.endpoints[endpoint_key(endpoint)] = (endpoint, rules)
        for rule in rules:
            self.claims.setdefault(rule.claim, []).append(rule)

    def drop_endpoint(self, key: EndpointKey) -> tuple[Endpoint, tuple[PortRule, ...]] | None:
        """Forget an endpoint and release its host ports; returns what was recorded."""
        entry = self.endpoints.pop(key, None)
        if entry is not None:
            for rule in entry[1]:
                holders = self.claims.get(rule.claim, [])
                if rule in holders:
                    holders.remove(rule)
                if not holders:
                    self.claims.pop(rule.claim, None)
        return entry

    def all_ports(self) -> list[PortRule]:
        """Every port rule of every endpoint, in a stable order."""
        return [rule for _, (_, rules) in sorted(self.endpoints.items()) for rule in rules]
