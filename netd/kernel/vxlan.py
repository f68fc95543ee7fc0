"""Thin netlink I/O for VXLAN devices: the device, its FDB and neighbour entries, the underlay.

One overlay network has one VXLAN device per node (:mod:`netd.drivers.overlay`): VNI, local
underlay address, destination port 4789, no multicast group and no default remote (nothing is
flooded to other nodes), learning off (the cluster says where each MAC is; the device never
guesses from traffic) and proxy on (the device answers ARP and NDP requests from its own
neighbour table, so no request leaves the node). Its entries are programmed per remote peer:
FDB ``MAC → VTEP`` (``self``, permanent) and neighbour ``IP → MAC`` (permanent).

Each helper is one or a few requests on an ``IPRoute`` the caller owns (the caller chooses the
namespace); failures become :class:`~netd.errors.KernelError` naming the operation. What to add
and remove is decided elsewhere (:mod:`netd.drivers.overlay_peers`, pure); this module has no
policy, knows no networks and never opens namespaces.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from ..errors import Conflict, InvalidInput, KernelError
from ..model import IPAddress
from . import links

NUD_PERMANENT = ndmsg.states["permanent"]
NTF_SELF = ndmsg.flags["self"]
ZERO_MAC = "00:00:00:00:00:00"


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


def remote_fdb(ipr: IPRoute, index: int) -> dict[str, set[IPv4Address]]:
    """The device's own (``self``) FDB entries that name a remote: MAC → VTEPs."""
    try:
        entries = list(ipr.fdb("dump", ifindex=index))
    except NetlinkError as exc:
        raise links.kernel_error(f"listing FDB entries of link {index}", exc) from exc
    out: dict[str, set[IPv4Address]] = {}
    for msg in entries:
        dst = msg.get_attr("NDA_DST")
        if msg["ifindex"] != index or not msg["flags"] & NTF_SELF or not dst:
            continue
        vtep = ipaddress.ip_address(dst)
        if isinstance(vtep, IPv4Address):
            out.setdefault(str(msg.get_attr("NDA_LLADDR")).lower(), set()).add(vtep)
    return out


def permanent_neighbours(ipr: IPRoute, index: int) -> dict[IPAddress, str]:
    """The device's permanent neighbour entries (IPv4 and IPv6): IP → MAC."""
    out: dict[IPAddress, str] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            entries = list(ipr.neigh("dump", family=family, ifindex=index))
        except NetlinkError as exc:
            raise links.kernel_error(f"listing neighbours of link {index}", exc) from exc
        for msg in entries:
            mac = msg.get_attr("NDA_LLADDR")
            if msg["ifindex"] == index and msg["state"] & NUD_PERMANENT and mac:
                out[ipaddress.ip_address(msg.get_attr("NDA_DST"))] = str(mac).lower()
    return out


def del_fdb(ipr: IPRoute, index: int, name: str, mac: str, vtep: IPv4Address) -> None:
    """Remove FDB entry ``mac → vtep``; one already gone is not an error."""
    try:
        ipr.fdb("del", ifindex=index, lladdr=mac, dst=str(vtep))
    except NetlinkError as exc:
        if exc.code != errno.ENOENT:
            raise links.kernel_error(f'removing FDB {mac} dst {vtep} of "{name}"', exc) from exc


def add_fdb(ipr: IPRoute, index: int, name: str, mac: str, vtep: IPv4Address) -> None:
    """Add FDB entry ``mac → vtep`` (self, permanent); appended next to others of that MAC."""
    try:
        ipr.fdb("append", ifindex=index, lladdr=mac, dst=str(vtep), state=NUD_PERMANENT)
    except NetlinkError as exc:
        raise links.kernel_error(f'adding FDB {mac} dst {vtep} to "{name}"', exc) from exc


def del_neighbour(ipr: IPRoute, index: int, name: str, ip: IPAddress) -> None:
    """Remove the neighbour entry of ``ip``; one already gone is not an error."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    try:
        ipr.neigh("del", ifindex=index, dst=str(ip), family=family)
    except NetlinkError as exc:
        if exc.code != errno.ENOENT:
            raise links.kernel_error(f'removing neighbour {ip} of "{name}"', exc) from exc


def set_neighbour(ipr: IPRoute, index: int, name: str, ip: IPAddress, mac: str) -> None:
    """Add or replace the permanent neighbour entry ``ip → mac``."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    try:
        ipr.neigh(
            "replace", ifindex=index, dst=str(ip), lladdr=mac, state=NUD_PERMANENT, family=family
        )
    except NetlinkError as exc:
        raise links.kernel_error(f'setting neighbour {ip} lladdr {mac} on "{name}"', exc) from exc
