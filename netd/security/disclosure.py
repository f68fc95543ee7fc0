"""What a rootless owner may learn from a conflict: that something is taken, never by whom.

Another user's networks are "not found, exactly like a missing one" (docs/security.md), but
names, subnets and host ports are global, so an owner's request can still collide with them.
The service's Conflict messages are written for root (``overlaps 10.89.1.0/24 of network
"fa"``, ``already published by container web-1``, ``already exists (id 3f2a...)``); for an owner
they are rewritten here unless every object involved is the owner's own (the owner's networks,
and the endpoints on them), in which case the full message is kept.

Pure: the callers pass the networks and endpoints to look at. ``OwnerScope`` applies it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from ..errors import Conflict
from ..model import Endpoint, Network, PortMapping

# Fields of the Conflicts the service raises for a name, a subnet or a published port.
NAME_FIELDS = frozenset({"name"})
SUBNET_FIELDS = frozenset({"subnet"})


def _generic(exc: Conflict, message: str) -> Conflict:
    out = Conflict(message, field=exc.field, value=exc.value)
    out.__cause__ = None
    return out


def network_conflict(
    exc: Conflict, name: str, networks: Iterable[Network], mine: Callable[[Network], bool]
) -> Conflict:
    """``exc`` as an owner creating network ``name`` may see it."""
    nets = list(networks)
    if exc.field in NAME_FIELDS:
        holders = [n for n in nets if n.name == name]
        if holders and all(mine(n) for n in holders):
            return exc
        return _generic(exc, f'creating network "{name}": the name "{name}" is already taken')
    if exc.field in SUBNET_FIELDS and exc.value is not None:
        try:
            subnet = ipaddress.ip_network(str(exc.value), strict=False)
        except ValueError:
            subnet = None
        holders = [
            n
            for n in nets
            for s in n.subnets
            if subnet is not None
            and s.subnet.version == subnet.version
            and s.subnet.overlaps(subnet)
        ]
        if holders and all(mine(n) for n in holders):
            return exc
        return _generic(exc, f'creating network "{name}": subnet {exc.value} is not available')
    return exc


def _same_port(a: PortMapping, b: PortMapping) -> bool:
    if a.protocol != b.protocol or a.host_port != b.host_port:
        return False
    return a.host_ip is None or b.host_ip is None or a.host_ip == b.host_ip


def port_conflict(
    exc: Conflict,
    ports: Iterable[PortMapping],
    endpoints: Iterable[tuple[Network, Endpoint]],
    mine: Callable[[Network], bool],
    attaching: tuple[str, str, str],
) -> Conflict:
    """``exc`` (a published-port Conflict) as an owner publishing ``ports`` may see it.

    ``endpoints`` are every network's endpoints; ``attaching`` is the (network id, container
    id, ifname) being attached, which is not its own rival.
    """
    wanted = list(ports)
    if any(_same_port(p, q) for i, p in enumerate(wanted) for q in wanted[i + 1 :]):
        return exc  # the request claims one port twice: nobody else is involved
    holders = [
        net
        for net, ep in endpoints
        if (ep.network_id, ep.container_id, ep.ifname) != attaching
        and any(_same_port(p, q) for p in wanted for q in ep.port_mappings)
    ]
    if holders and all(mine(n) for n in holders):
        return exc
    return _generic(exc, f"publishing host port {exc.value}: the port is not available")
