"""Routes of the daemon's own namespace, for IPAM's overlap check of new default subnets.

Read-only: lists the destinations of the main routing table (IPv4 and IPv6), leaving out
default routes and netd's own bridges (whose subnets IPAM knows from the store).
"""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from ..model import IPNetwork
from ..names import BRIDGE_PREFIX

RT_TABLE_MAIN = 254


def host_routes() -> list[IPNetwork]:
    """Destination prefixes of the main table, without default routes and netd bridges."""
    out: list[IPNetwork] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.get_routes(table=RT_TABLE_MAIN):
            dst = route.get_attr("RTA_DST")
            plen = route["dst_len"]
            if dst is None or plen == 0:
                continue
            if str(names.get(route.get_attr("RTA_OIF"), "")).startswith(BRIDGE_PREFIX):
                continue
            out.append(ipaddress.ip_network(f"{dst}/{plen}", strict=False))
    return out
