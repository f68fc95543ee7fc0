"""Checks every store engine makes before its transaction, in one place.

Pure functions over records: the canonical text of an endpoint's addresses and of the IPAM
cursors, refusing input no engine may record (an address twice in one endpoint, a cursor outside
its subnet). SQLite and etcd call the same checks so they refuse the same input the same way.
"""

from __future__ import annotations

import ipaddress

from ..errors import InvalidInput
from ..model import Endpoint, IPAddress


def endpoint_addresses(endpoint: Endpoint) -> list[str]:
    """The endpoint's addresses in canonical text form; InvalidInput on a repeated address."""
    seen: list[str] = []
    for iface in endpoint.addresses:
        text = str(iface.ip)
        if text in seen:
            raise InvalidInput("addresses", text, "an address may appear only once per endpoint")
        seen.append(text)
    return seen


def cursor_rows(cursors: dict[str, IPAddress]) -> list[tuple[str, str]]:
    """Canonical (subnet, address) rows; InvalidInput unless each address lies in its subnet."""
    rows: list[tuple[str, str]] = []
    for subnet, address in cursors.items():
        try:
            net = ipaddress.ip_network(subnet)
        except (ValueError, TypeError) as e:
            raise InvalidInput("cursors", subnet, f"not a subnet: {e}") from e
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address) or (
            address not in net
        ):
            rule = "the address must lie in the subnet"
            raise InvalidInput("cursors", f"{subnet}={address}", rule)
        rows.append((str(net), str(address)))
    return rows
