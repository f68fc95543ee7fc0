"""What the firewall must do for a network and an endpoint, as validated plain data.

Both backends (nftables and iptables) render from the records built here, so they share one
reading of the network options and one rule for published-port conflicts. This module is pure:
it reads the network's typed options (``Network.opts``, :mod:`netd.options`: the same rules
that checked them at create), checks every name and number that will end up inside a rule, and
expands port mappings per address family. It does not talk to the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Conflict, InvalidInput
from ..model import Endpoint, IPAddress, IPNetwork, Network, PortMapping
from ..names import check_container_id, check_ifname

PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class NetworkPolicy:
    """The firewall-relevant facts of one network, validated."""

    network_id: str
    bridge: str
    internal: bool
    icc: bool
    masquerade: bool
    snat4: IPAddress | None
    snat6: IPAddress | None
    subnets4: tuple[IPNetwork, ...]
    subnets6: tuple[IPNetwork, ...]
    gateways4: tuple[IPAddress, ...]
    gateways6: tuple[IPAddress, ...]
    anti_spoof: bool = False  # containers may send only from the addresses netd gave them

    @property
    def tag(self) -> str:
        """Owner tag put on every element/rule of this network: ``netd:<net12>``."""
        return f"netd:{self.network_id[:12]}"

    def subnets(self, version: int) -> tuple[IPNetwork, ...]:
        """Subnets of one address family."""
        return self.subnets4 if version == 4 else self.subnets6

    def gateways(self, version: int) -> tuple[IPAddress, ...]:
        """Gateway addresses of one address family."""
        return self.gateways4 if version == 4 else self.gateways6

    def snat(self, version: int) -> IPAddress | None:
        """Fixed source address for outbound traffic, if configured."""
        return self.snat4 if version == 4 else self.snat6

    def nat_outbound(self, version: int) -> bool:
        """True if outbound traffic of this family is source-NATed (masquerade or SNAT)."""
        return not self.internal and self.masquerade and bool(self.subnets(version))


def build_policy(network: Network, bridge: str) -> NetworkPolicy:
    """Validate ``network``'s options and ``bridge`` and return the network's policy."""
    check_ifname(bridge, "bridge")
    if not network.id or not network.id.isalnum():
        raise InvalidInput("network.id", network.id, "must be a non-empty alphanumeric id")
    subnets = [s for s in network.subnets]
    options = network.opts.firewall
    return NetworkPolicy(
        network_id=network.id,
        bridge=bridge,
        internal=network.internal,
        icc=options.enable_icc,
        masquerade=options.enable_ip_masquerade,
        snat4=options.host_ipv4,
        snat6=options.host_ipv6,
        subnets4=tuple(s.subnet for s in subnets if s.version == 4),
        subnets6=tuple(s.subnet for s in subnets if s.version == 6),
        gateways4=tuple(s.gateway for s in subnets if s.version == 4 and s.gateway is not None),
        gateways6=tuple(s.gateway for s in subnets if s.version == 6 and s.gateway is not None),
        anti_spoof=options.anti_spoof,
    )


def check_backend_supports(network: Network, backend: str, capabilities: frozenset[str]) -> None:
    """Refuse (InvalidInput) an option the firewall backend cannot enforce, e.g. anti_spoof.

    Checked when a network is created: a security option asked for and silently not enforced
    would be worse than a clear refusal. (Not when rules are rebuilt, so a network made under
    another backend never stops the daemon.)
    """
    options = network.opts
    if options.firewall.anti_spoof and "anti_spoof" not in capabilities:
        raise InvalidInput(
            "options.anti_spoof",
            options.canonical["anti_spoof"],
            f'needs the nftables firewall backend; this daemon runs "{backend}", which '
            "cannot filter what containers send on bridge ports",
        )


@dataclass(frozen=True)
class PortRule:
    """One DNAT: (family, proto, [host ip], host port) → container address and port."""

    version: int
    protocol: str
    host_ip: IPAddress | None
    host_port: int
    dest: IPAddress
    dest_port: int
    owner: str  # container id: who holds the host port

    @property
    def claim(self) -> tuple[int, str, int]:
        """What two rules must not share unless their host IPs differ."""
        return (self.version, self.protocol, self.host_port)

    def describe(self) -> str:
        """``[host_ip:]port/proto`` as a user wrote it."""
        ip = f"{self.host_ip}:" if self.host_ip is not None else ""
        if self.host_ip is not None and self.host_ip.version == 6:
            ip = f"[{self.host_ip}]:"
        return f"{ip}{self.host_port}/{self.protocol}"


def _check_port(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidInput(field, value, "a port is an integer in 1-65535")
    return value


LOOPBACK6_RULE = (
    "cannot be published on: the kernel does not deliver IPv6 loopback traffic to another "
    "namespace after DNAT (IPv6 has no route_localnet); publish on 127.0.0.1, on a host "
    "address or on all addresses"
)


def check_port_mappings(mappings: tuple[PortMapping, ...]) -> None:
    """Refuse a host IP netd cannot publish on (``::1``), before anything changes.

    Called on attach for every way in (API, CLI, CNI, compose), whatever the backend.
    ``::1`` is refused rather than left silently unreachable: Docker answers there only
    through its userland proxy, and netd has none. (Not checked when rules are rebuilt from
    stored endpoints, so an endpoint recorded by an older netd never stops the daemon.)
    """
    for i, pm in enumerate(mappings):
        if pm.host_ip is not None and pm.host_ip.version == 6 and pm.host_ip.is_loopback:
            raise InvalidInput(f"port_mappings[{i}].host_ip", str(pm.host_ip), LOOPBACK6_RULE)


def endpoint_ports(policy: NetworkPolicy, endpoint: Endpoint) -> tuple[PortRule, ...]:
    """The endpoint's published ports, one rule per address family they apply to.

    Internal networks publish nothing (Docker ignores ports there too, and CNI runtimes pass
    the same portMappings to every network of a container), so this returns ``()`` for them.
    """
    check_container_id(endpoint.container_id)
    if policy.internal:
        return ()
    dests: dict[int, IPAddress] = {}
    for iface in endpoint.addresses:
        dests.setdefault(iface.version, iface.ip)
    rules: list[PortRule] = []
    for i, pm in enumerate(endpoint.port_mappings):
        field = f"port_mappings[{i}]"
        _check_port(pm.host_port, f"{field}.host_port")
        _check_port(pm.container_port, f"{field}.container_port")
        if pm.protocol not in PROTOCOLS:
            raise InvalidInput(f"{field}.protocol", pm.protocol, "one of tcp, udp, sctp")
        versions = [pm.host_ip.version] if pm.host_ip is not None else sorted(dests)
        if pm.host_ip is not None and pm.host_ip.version not in dests:
            raise InvalidInput(
                f"{field}.host_ip",
                str(pm.host_ip),
                f"the endpoint has no IPv{pm.host_ip.version} address to forward to",
            )
        for version in versions:
            rules.append(
                PortRule(
                    version=version,
                    protocol=pm.protocol,
                    host_ip=pm.host_ip,
                    host_port=pm.host_port,
                    dest=dests[version],
                    dest_port=pm.container_port,
                    owner=endpoint.container_id,
                )
            )
    return tuple(dict.fromkeys(rules))


def icc_port(policy: NetworkPolicy, endpoint: Endpoint) -> str | None:
    """The endpoint's host-side veth if its network isolates containers (enable_icc=false)."""
    if policy.icc:
        return None
    return check_ifname(endpoint.host_ifname, "host_ifname")


def spoof_port(
    policy: NetworkPolicy, endpoint: Endpoint
) -> tuple[str, tuple[IPAddress, ...]] | None:
    """(host-side veth, the endpoint's addresses) if its network has anti_spoof on."""
    if not policy.anti_spoof:
        return None
    port = check_ifname(endpoint.host_ifname, "host_ifname")
    return port, tuple(iface.ip for iface in endpoint.addresses)


def clashes(a: PortRule, b: PortRule) -> bool:
    """True if two rules claim the same host port (same family and protocol, overlapping IP)."""
    if a.claim != b.claim:
        return False
    return a.host_ip is None or b.host_ip is None or a.host_ip == b.host_ip


def check_conflicts(new: tuple[PortRule, ...], held: list[tuple[PortRule, str]]) -> None:
    """Raise Conflict naming the holder if a rule in ``new`` clashes with a held rule.

    ``held`` pairs each existing rule with its holder's endpoint description; rules within
    ``new`` are also checked against each other.
    """
    seen: list[tuple[PortRule, str]] = list(held)
    for rule in new:
        for other, holder in seen:
            if clashes(rule, other):
                raise Conflict(
                    f"publishing host port {rule.describe()} for container {rule.owner}: "
                    f"already published by container {holder}",
                    field="port_mappings",
                    value=rule.describe(),
                )
        seen.append((rule, rule.owner))
