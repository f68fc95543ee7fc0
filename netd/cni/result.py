"""Build CNI ADD results from netd records, in the spec version the runtime asked for.

Result shapes (SPEC.md "Success", and the 0.4.0 spec's "Result"):

- 1.0.0 / 1.1.0: ``{cniVersion, interfaces, ips: [{address, gateway, interface}], routes, dns}``
- 0.3.0 / 0.3.1 / 0.4.0: the same, and every ``ips`` entry also carries ``"version": "4"|"6"``
  (dropped in 1.0.0).

As the main plugin, ``interfaces`` is ``[host veth, container interface]`` and every address
points at index 1 (the container side); the reference ``portmap``, ``bandwidth`` and ``tuning``
plugins chained after netd find the host veth (no ``sandbox``) and the container interface
(``sandbox`` = the netns) there. As an IPAM plugin, the result has no ``interfaces`` and the
addresses no ``interface`` index, as the spec asks of IPAM plugins. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from ..drivers.base import CniInterface
from ..model import Endpoint, IPAddress, Network
from .netdef import Route
from .spec import version_key


def is_legacy(version: str) -> bool:
    """True for the pre-1.0 result format (``version`` in every ``ips`` entry)."""
    return version_key(version) < (1, 0, 0)


def gateway_of(
    network: Network, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> IPAddress | None:
    """The gateway of the network subnet that holds ``address``."""
    for subnet in network.subnets:
        if address.ip in subnet.subnet:
            return subnet.gateway
    return None


def build_routes(
    network: Network, endpoint: Endpoint, extra: Sequence[Route]
) -> list[dict[str, str]]:
    """Default route per family via the gateway (none on internal networks), then ``extra``."""
    routes: list[dict[str, str]] = []
    seen: set[str] = set()
    if not network.internal:
        for address in endpoint.addresses:
            gateway = gateway_of(network, address)
            dst = "0.0.0.0/0" if address.version == 4 else "::/0"
            if gateway is not None and dst not in seen:
                routes.append({"dst": dst, "gw": str(gateway)})
                seen.add(dst)
    for route in extra:
        if route.dst not in seen:
            routes.append(route.to_json())
            seen.add(route.dst)
    return routes


def build_dns(
    base: dict[str, Any], searches: Sequence[str] = (), options: Sequence[str] = ()
) -> dict[str, Any]:
    """The result's ``dns``: the network's resolver plus the runtime's searches and options."""
    out: dict[str, Any] = {}
    if base.get("nameservers"):
        out["nameservers"] = list(base["nameservers"])
    if base.get("domain"):
        out["domain"] = base["domain"]
    search = list(dict.fromkeys([*base.get("search", []), *searches]))
    if search:
        out["search"] = search
    opts = list(dict.fromkeys([*base.get("options", []), *options]))
    if opts:
        out["options"] = opts
    return out


def build_result(
    version: str,
    network: Network,
    endpoint: Endpoint,
    *,
    dns: dict[str, Any],
    interfaces: Sequence[CniInterface] = (),
    extra_routes: Sequence[Route] = (),
) -> dict[str, Any]:
    """The ADD result for ``endpoint`` in the format of ``version``.

    ``interfaces`` is the driver's part (``Driver.cni_interfaces``): none for an IPAM-only
    attachment, host veth and container side for the bridge, the container side alone for
    macvlan. Each address names the container's interface by its index, when there is one.
    """
    legacy = is_legacy(version)
    result: dict[str, Any] = {"cniVersion": version}
    container_index = next((i for i, x in enumerate(interfaces) if x.container), None)
    if interfaces:
        result["interfaces"] = [x.to_json() for x in interfaces]
    ips = []
    for address in endpoint.addresses:
        entry: dict[str, Any] = {}
        if legacy:
            entry["version"] = str(address.version)
        if container_index is not None:
            entry["interface"] = container_index
        entry["address"] = str(address)
        gateway = gateway_of(network, address)
        if gateway is not None:
            entry["gateway"] = str(gateway)
        ips.append(entry)
    result["ips"] = ips
    result["routes"] = build_routes(network, endpoint, extra_routes)
    result["dns"] = dns
    return result
