"""Builders of valid Network, Subnet and Endpoint records for tests.

Defaults follow what netd itself produces: a network id is 64 hex digits (here derived from the
name, so the same name always gives the same id), the gateway is a subnet's first host, an
endpoint's host veth is named the way the bridge driver names it, and addresses are taken from
the network's subnets (host number 2 unless asked otherwise). Any field can be overridden.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from typing import Any

from netd.model import Endpoint, IPAddress, IPInterface, Network, Subnet
from netd.names import host_veth_name

AUTO = "auto"


def ip(text: str) -> IPAddress:
    """``ipaddress.ip_address`` under a short name."""
    return ipaddress.ip_address(text)


def net_id(name: str) -> str:
    """The deterministic 64-hex-digit id the kit gives network ``name``."""
    return hashlib.sha256(f"kit-network:{name}".encode()).hexdigest()


def subnet(
    cidr: str,
    gateway: str | None = AUTO,
    ip_range: str | None = None,
    aux: dict[str, str] | None = None,
) -> Subnet:
    """A Subnet; ``cidr`` may carry host bits ("10.1.0.1/24"), which then name the gateway.

    ``gateway``: "auto" (the host bits of ``cidr`` if any, else the first host), None (no
    gateway) or an address.
    """
    iface = ipaddress.ip_interface(cidr)
    net = iface.network
    if gateway == AUTO:
        gw: IPAddress | None = iface.ip if iface.ip != net.network_address else net[1]
    else:
        gw = ip(gateway) if gateway else None
    return Subnet(
        subnet=net,
        gateway=gw,
        ip_range=ipaddress.ip_network(ip_range) if ip_range else None,
        aux_addresses={k: ip(v) for k, v in (aux or {}).items()},
    )


def _subnets(spec: str | Subnet | Sequence[str | Subnet]) -> tuple[Subnet, ...]:
    items = [spec] if isinstance(spec, str | Subnet) else list(spec)
    return tuple(s if isinstance(s, Subnet) else subnet(s) for s in items)


def network(
    name: str = "n1",
    subnets: str | Subnet | Sequence[str | Subnet] = "10.1.0.0/24",
    driver: str = "bridge",
    **overrides: Any,
) -> Network:
    """A Network named ``name`` on ``subnets`` (one CIDR, a Subnet, or a list of either).

    ``id`` defaults to :func:`net_id` of the name; ``ipv6`` to whether a subnet is IPv6; any
    other Network field is an override (``internal=True``, ``options={...}``, ...).
    """
    subs = _subnets(subnets)
    fields: dict[str, Any] = {
        "id": net_id(name),
        "name": name,
        "driver": driver,
        "subnets": subs,
        "ipv6": any(s.version == 6 for s in subs),
    }
    fields.update(overrides)
    return Network(**fields)


def addresses(*texts: str) -> tuple[IPInterface, ...]:
    """Interface addresses ("10.1.0.2/24", ...) as the tuple an Endpoint holds."""
    return tuple(ipaddress.ip_interface(t) for t in texts)


def endpoint(
    net: Network,
    cid: str = "c1",
    ifname: str = "eth0",
    ip: str | Sequence[str] | None = None,
    *,
    host: int = 2,
    **overrides: Any,
) -> Endpoint:
    """An Endpoint of ``net`` for container ``cid``, state "ready".

    ``ip``: one interface address or a list; by default host number ``host`` of every subnet
    of ``net``, with the subnet's prefix length. ``netns`` defaults to /run/netns/<cid> and
    ``host_ifname`` to the bridge driver's name for the endpoint; any other Endpoint field is an
    override (``name=``, ``port_mappings=``, ...).
    """
    if ip is None:
        addrs = tuple(
            ipaddress.ip_interface(f"{s.subnet[host]}/{s.subnet.prefixlen}") for s in net.subnets
        )
    else:
        addrs = addresses(*([ip] if isinstance(ip, str) else ip))
    fields: dict[str, Any] = {
        "network_id": net.id,
        "container_id": cid,
        "ifname": ifname,
        "netns": f"/run/netns/{cid}",
        "host_ifname": host_veth_name(net.id, cid, ifname),
        "addresses": addrs,
        "state": "ready",
    }
    fields.update(overrides)
    return Endpoint(**fields)
