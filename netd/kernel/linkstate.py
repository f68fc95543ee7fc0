"""Read-only state of host links over netlink, for inspect (``netd network inspect``).

A missing link is reported as missing (``present: false``), never raised: inspect is how an
operator finds out what is broken. Drivers use it in their ``describe``.
"""

from __future__ import annotations

from typing import Any

from pyroute2 import IPRoute

from ..errors import NetdError
from .links import get_link

# IFF_UP and IFF_LOWER_UP (operstate can read "unknown" on bridges without ports).
_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000


def link_state(ipr: Any, ifname: str) -> dict[str, Any]:
    """One link's state from netlink; ``present: false`` when the kernel has no such link."""
    msg = get_link(ipr, ifname)
    if msg is None:
        return {"name": ifname, "present": False}
    flags = int(msg["flags"])
    master_index = msg.get_attr("IFLA_MASTER")
    master = None
    if master_index:
        found = ipr.get_links(master_index)
        master = found[0].get_attr("IFLA_IFNAME") if found else None
    addrs = [
        f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
        for a in ipr.get_addr(index=msg["index"])
        if a.get_attr("IFA_ADDRESS") is not None
    ]
    return {
        "name": ifname,
        "present": True,
        "index": msg["index"],
        "up": bool(flags & _IFF_UP),
        "lower_up": bool(flags & _IFF_LOWER_UP),
        "operstate": msg.get_attr("IFLA_OPERSTATE"),
        "mtu": msg.get_attr("IFLA_MTU"),
        "mac": msg.get_attr("IFLA_ADDRESS"),
        "master": master,
        "alias": msg.get_attr("IFLA_IFALIAS"),
        "addresses": addrs,
    }


def links_state(names: list[str]) -> dict[str, dict[str, Any]] | str:
    """Each named host link's state over one netlink socket; the error text if none could be
    read (reading must not fail the inspect: the caller reports it)."""
    try:
        with IPRoute() as ipr:
            return {name: link_state(ipr, name) for name in names}
    except (OSError, NetdError) as exc:
        return f"reading links over netlink: {exc}"
