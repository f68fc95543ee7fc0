"""Thin netlink I/O for VXLAN devices: the device, its FDB and neighbour entries, the underlay.

One overlay network has one VXLAN device per node (:mod:`netd.drivers.overlay`): VNI, local
underlay address, destination port 4789, no multicast group and no default remote (nothing is
flooded to other nodes), learning off (the cluster says where each MAC is; the device never
guesses from traffic) and proxy on (the device answers ARP and NDP requests from its own
neighbour table, so no request leaves the node). Its entries are programmed per remote peer:
FDB ``MAC → VTEP`` (``self``, permanent) and neighbour ``IP → MAC`` (permanent), read and
written in batches by :mod:`netd.kernel.neigh`.

Each helper is one or a few requests on an ``IPRoute`` the caller owns (the caller chooses the
namespace); failures become :class:`~netd.errors.KernelError` naming the operation. What to add
and remove is decided elsewhere (:mod:`netd.drivers.overlay_peers`, pure); this module has no
policy, knows no networks and never opens namespaces.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import Conflict, InvalidInput, KernelError
from . import links


@dataclass(frozen=True)
class VxlanSpec:
    """A VXLAN device as an overlay network needs it on this node."""

    name: str
    tag: str  # its ifalias (netd.names.vxlan_tag)
    vni: int
    local: IPv4Address  # this node's underlay address
    port: int
    mtu: int


def _info(link: Any) -> dict[str, Any]:
    """The IFLA_INFO_DATA attributes of a vxlan link message, by name."""
    info = link.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if data is None:
        return {}
    return {name: value for name, value in data["attrs"]}


def vxlan_settings(link: Any) -> dict[str, Any]:
    """What a vxlan link is set to: vni, local, port, learning, proxy, group (read-only)."""
    data = _info(link)
    return {
        "vni": data.get("IFLA_VXLAN_ID"),
        "local": data.get("IFLA_VXLAN_LOCAL"),
        "port": data.get("IFLA_VXLAN_PORT"),
        "learning": bool(data.get("IFLA_VXLAN_LEARNING", 1)),
        "proxy": bool(data.get("IFLA_VXLAN_PROXY", 0)),
        "group": data.get("IFLA_VXLAN_GROUP") or "",
    }


def matches(link: Any, spec: VxlanSpec) -> bool:
    """Whether an existing vxlan link has the settings that cannot change in place."""
    found = vxlan_settings(link)
    return (
        found["vni"] == spec.vni
        and found["local"] == str(spec.local)
        and found["port"] == spec.port
        and not found["learning"]
        and found["proxy"]
        and found["group"] in ("", "0.0.0.0")
    )


def ensure_vxlan(ipr: IPRoute, spec: VxlanSpec, master: int) -> int:
    """Converge VXLAN device ``spec`` enslaved to bridge index ``master``, up; its index.

    An existing device of ours (tagged ``spec.tag``) with other fixed settings (a new VNI or
    node address) is re-created; a link of that name that is not ours is an error.
    """
    operation = f'creating VXLAN device "{spec.name}" (VNI {spec.vni}, local {spec.local})'
    link = links.get_link(ipr, spec.name)
    if link is not None and not (links.link_kind(link) == "vxlan" and matches(link, spec)):
        if link.get_attr("IFLA_IFALIAS") != spec.tag:
            kind = links.link_kind(link) or "device"
            raise KernelError(f"{operation}: a {kind} link not made by netd has that name")
        links.delete_link(ipr, spec.name)
        link = None
    if link is None:
        try:
            ipr.link(
                "add",
                ifname=spec.name,
                kind="vxlan",
                vxlan_id=spec.vni,
                vxlan_local=str(spec.local),
                vxlan_port=spec.port,
                vxlan_learning=0,
                vxlan_proxy=1,
                mtu=spec.mtu,
                address=links.random_mac(),
            )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                # The VNI is taken on this host (another network's device, or one not netd's):
                # the user's -o vni=N conflicts, as etcd says when the other network is
                # elsewhere, and an allocated VNI is retried with the next one.
                why = f"another VXLAN device already uses VNI {spec.vni} on port {spec.port}"
                raise Conflict(
                    f"{operation}: {why}", field="options.vni", value=str(spec.vni)
                ) from exc
            raise links.kernel_error(operation, exc) from exc
        link = links.get_link(ipr, spec.name)
        if link is None:
            raise KernelError(f"{operation}: it vanished right after creation")
    try:
        ipr.link(
            "set", index=link["index"], ifalias=spec.tag, mtu=spec.mtu, master=master, state="up"
        )
    except NetlinkError as exc:
        raise links.kernel_error(f'configuring VXLAN device "{spec.name}"', exc) from exc
    return int(link["index"])


def underlay_mtu(ipr: IPRoute, address: IPv4Address) -> int:
    """MTU of the link holding ``address``; InvalidInput naming the address when none does."""
    try:
        found = list(ipr.addr("dump", family=socket.AF_INET))
    except NetlinkError as exc:
        raise links.kernel_error("listing addresses", exc) from exc
    for msg in found:
        if msg.get_attr("IFA_LOCAL") == str(address) or msg.get_attr("IFA_ADDRESS") == str(address):
            try:
                link = ipr.link("get", index=msg["index"])[0]
            except NetlinkError:
                continue  # the link went away between the two requests
            return int(link.get_attr("IFLA_MTU"))
    raise InvalidInput(
        "cluster.node_address",
        str(address),
        "no interface in the daemon's network namespace holds this address (it is the "
        "underlay address other nodes send this node's VXLAN traffic to)",
    )
