"""What netd's firewall adds to a recovered network and endpoint (pure; for `netd recover`).

The bridge and the veths give back a network's subnets and an endpoint's addresses; the rules
read by :mod:`netd.firewall.readback` give back the ``internal`` flag, the NAT and ICC options
and the published ports. This module turns those facts into record fields and into the
report's "not recovered" lines. It reads nothing itself.
"""

from __future__ import annotations

from ..firewall.readback import FirewallFacts
from ..model import Endpoint, IPInterface, PortMapping, Subnet


def describe_port(pm: PortMapping) -> str:
    """``[host_ip:]port/proto->container port`` for the report."""
    ip = (
        ""
        if pm.host_ip is None
        else f"[{pm.host_ip}]:"
        if pm.host_ip.version == 6
        else f"{pm.host_ip}:"
    )
    return f"{ip}{pm.host_port}/{pm.protocol}->{pm.container_port}"


def firewall_options(
    facts: FirewallFacts, net12: str, subnets: tuple[Subnet, ...]
) -> tuple[bool, dict[str, str]]:
    """``(internal, options)`` of a network from what its firewall rules say (defaults left out).

    Outbound NAT is per address family in the rules: none at all means masquerading was off;
    an address means ``host_ipv4``/``host_ipv6``. Internal networks have no NAT rules to read.
    """
    seen = facts.networks.get(net12)
    if seen is None:
        return False, {}
    options = {"enable_icc": "false"} if seen.icc_off else {}
    if not seen.internal:
        if not seen.nat and subnets:
            options["enable_ip_masquerade"] = "false"
        for version, target in sorted(seen.nat.items()):
            if target != "masquerade":
                options[f"host_ipv{version}"] = target
    return seen.internal, options


def endpoint_ports(
    facts: FirewallFacts, net12: str, container_id: str, addresses: tuple[IPInterface, ...]
) -> tuple[PortMapping, ...]:
    """The published ports forwarding to one of ``addresses`` of ``container_id``.

    A port published on every host address appears once per address family in the rules; it
    is one mapping again here.
    """
    ips = {a.ip for a in addresses}
    found = [
        p.mapping
        for p in facts.ports
        if p.dest in ips
        and container_id.startswith(p.owner)
        and (p.net12 is None or p.net12 == net12)
    ]
    order = sorted(dict.fromkeys(found), key=lambda m: (m.host_port, m.protocol, str(m.host_ip)))
    return tuple(order)


def firewall_losses(facts: FirewallFacts, endpoints: list[Endpoint]) -> list[str]:
    """What the report must say the firewall could not give back (or gave for no endpoint)."""
    if not facts.backend:
        return [
            "the firewall: no netd nftables table nor iptables chain found, so internal flags, "
            "NAT/ICC options and published ports are unknown (defaults used)",
            *(f"the firewall: {p}" for p in facts.problems),
        ]
    out = [f"the firewall ({facts.backend}): {p}" for p in facts.problems]
    mine = {(ep.container_id, a.ip) for ep in endpoints for a in ep.addresses if ep.port_mappings}
    for p in facts.ports:
        if not any(cid.startswith(p.owner) and ip == p.dest for cid, ip in mine):
            out.append(
                f"published port {describe_port(p.mapping)} to {p.dest} of container "
                f"{p.owner[:12]}: no recovered endpoint has that address"
            )
    if facts.backend == "nftables":
        out.append(
            "enable_icc=false of a network with no container (nftables marks container ports only)"
        )
    return out
