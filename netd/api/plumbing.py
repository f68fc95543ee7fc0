"""Read-only view of a network's plumbing for ``netd network inspect`` (the ``plumbing`` key).

Gathers what the kernel and the daemon's helpers hold *now* for one network: the bridge's link
state (up, MTU, MAC, addresses), each endpoint's host-side veth (up, MTU, master, peer MAC), the
firewall backend's tables, chains and the set/map elements (or rules) the network owns, and the
DNS records the DNS workers serve for it. Missing objects are reported as missing (``present:
false``), never repaired or raised: inspect is how an operator finds out what is broken.

It does not change anything and does not compare with the records beyond marking what is absent
(``netd doctor`` and the reconciler judge; this only shows).
"""

from __future__ import annotations

import logging
from typing import Any

from ..drivers.ipam import is_ipam_only
from ..errors import NetdError
from ..model import Endpoint, Network

log = logging.getLogger(__name__)

# IFF_UP and IFF_LOWER_UP (operstate can read "unknown" on bridges without ports).
_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000


def _link_state(ipr: Any, ifname: str) -> dict[str, Any]:
    """One link's state from netlink; ``present: false`` when the kernel has no such link."""
    from ..kernel.links import get_link

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


def links_state(bridge: str, endpoints: list[Endpoint]) -> dict[str, Any]:
    """The bridge's and every endpoint's host veth state, read over one netlink socket."""
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            bridge_state = _link_state(ipr, bridge)
            veths = []
            for ep in endpoints:
                state = _link_state(ipr, ep.host_ifname)
                state.update(
                    container_id=ep.container_id,
                    ifname=ep.ifname,
                    on_bridge=state.get("master") == bridge,
                )
                veths.append(state)
    except (OSError, NetdError) as exc:
        # Reading must not fail the inspect: report what could not be read.
        return {"error": f"reading links over netlink: {exc}"}
    return {"bridge": bridge_state, "veths": veths}


def describe_firewall(firewall: Any, network: Network) -> dict[str, Any]:
    """The backend's ``describe(network)``, or a note when the backend has none."""
    describe = getattr(firewall, "describe", None)
    if describe is None:
        return {"backend": getattr(firewall, "name", "unknown"), "note": "no describe()"}
    try:
        return dict(describe(network))
    except Exception as exc:  # a broken firewall is exactly what inspect must show
        log.warning("describing the firewall of network %s: %s", network.name, exc)
        return {"backend": getattr(firewall, "name", "unknown"), "error": str(exc)}


def dns_records(dns: Any, network: Network) -> dict[str, Any] | None:
    """The records served for ``network`` (None when DNS is off or the daemon has no DNS)."""
    records = getattr(dns, "records", None)
    if records is None or not network.dns_enabled:
        return None
    result = records(network.id)
    return dict(result) if result is not None else None


def plumbing(
    network: Network, bridge: str, endpoints: list[Endpoint], firewall: Any, dns: Any
) -> dict[str, Any]:
    """Everything above for one network (blocking: run it in a worker thread)."""
    if is_ipam_only(network):
        # Nothing of netd's exists in the kernel for it: say so rather than report "missing".
        return {
            "ipam_only": True,
            "note": "IPAM-only network: netd allocates and records its addresses; the main CNI "
            "plugin owns its interfaces (no bridge, veth, firewall rules or DNS of netd's)",
        }
    out = links_state(bridge, endpoints)
    out["firewall"] = describe_firewall(firewall, network)
    out["dns"] = dns_records(dns, network)
    return out
