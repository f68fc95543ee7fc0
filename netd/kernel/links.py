"""Thin pyroute2 helpers for links, addresses and routes, with errors translated at the seam.

Each helper is one or two netlink requests on an ``IPRoute`` the caller owns (so the caller
chooses the namespace, see :mod:`netd.kernel.netns`). Failures become
:class:`~netd.errors.KernelError` whose message names the operation and the object:
``creating bridge "nd-3f2a": File exists``.

This module has no policy: it does not know about networks or endpoints, does not roll back, and
never opens namespaces. The bridge driver composes these steps.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import KernelError
from ..model import IPAddress, IPInterface
from .rtnl import RtnlError

IFF_UP = 0x1
IFA_F_NODAD = 0x02  # linux/include/uapi/linux/if_addr.h
BRIDGE_MODE_HAIRPIN = 1  # IFLA_BRPORT_MODE value (linux/if_bridge.h)
DEFAULT_MTU = 1500


def errno_text(exc: BaseException) -> str:
    """The errno text of a netlink/OS error (``File exists``), else ``str(exc)``.

    A refused batched request keeps its description: ``adding address ...: Permission denied``.
    """
    if isinstance(exc, RtnlError):
        return f"{exc.request}: {os.strerror(exc.errno or errno.EIO)}"
    code = getattr(exc, "code", None) if isinstance(exc, NetlinkError) else None
    if code is None and isinstance(exc, OSError):
        code = exc.errno
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(exc)


def is_errno(exc: BaseException, code: int) -> bool:
    """True if ``exc`` is a netlink or OS error carrying errno ``code``."""
    if isinstance(exc, NetlinkError):
        return bool(exc.code == code)
    return isinstance(exc, OSError) and exc.errno == code


def kernel_error(operation: str, exc: BaseException) -> KernelError:
    """``KernelError("<operation>: <errno text>")`` for ``raise ... from exc``."""
    return KernelError(f"{operation}: {errno_text(exc)}")


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel's eth_random_addr makes)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def get_link(ipr: IPRoute, ifname: str) -> Any | None:
    """The link message for ``ifname``, or None when there is no such link."""
    try:
        msgs = ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise kernel_error(f'looking up link "{ifname}"', exc) from exc
    return msgs[0] if msgs else None


def link_kind(msg: Any) -> str | None:
    """IFLA_INFO_KIND of a link message (``bridge``, ``veth``) or None."""
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def ensure_bridge(ipr: IPRoute, name: str, alias: str, mtu: int, mac: str | None = None) -> Any:
    """Create bridge ``name`` (or adopt it if it exists), set alias and MTU, bring it up.

    ``mac`` is the MAC a new bridge gets (default random). Returns the link message. An
    existing link of another kind is an error, not adopted.
    """
    link = get_link(ipr, name)
    if link is None:
        try:
            # A fixed MAC stops the bridge from taking the lowest port MAC, which would change
            # (and flush neighbours) every time a container comes or goes.
            ipr.link("add", ifname=name, kind="bridge", address=mac or random_mac(), mtu=mtu)
        except NetlinkError as exc:
            raise kernel_error(f'creating bridge "{name}"', exc) from exc
        link = get_link(ipr, name)
        if link is None:
            raise KernelError(f'creating bridge "{name}": it vanished right after creation')
    elif link_kind(link) != "bridge":
        raise KernelError(f'creating bridge "{name}": a {link_kind(link)} link has that name')
    try:
        ipr.link("set", index=link["index"], ifalias=alias, mtu=mtu, state="up")
    except NetlinkError as exc:
        raise kernel_error(f'configuring bridge "{name}"', exc) from exc
    return link


def ensure_address(ipr: IPRoute, index: int, ifname: str, iface: IPInterface) -> bool:
    """Add ``iface`` (address/prefix) to link ``index``; IPv6 without DAD. False if present."""
    try:
        add_address(ipr, index, iface)
    except KernelError as exc:
        if isinstance(exc.__cause__, NetlinkError) and exc.__cause__.code == errno.EEXIST:
            return False
        raise KernelError(f'adding address {iface} to "{ifname}": {exc.message}') from exc
    return True


def add_address(ipr: IPRoute, index: int, iface: IPInterface) -> None:
    """Add one address; IPv6 gets IFA_F_NODAD so it is usable at once."""
    kwargs: dict[str, Any] = {
        "index": index,
        "address": str(iface.ip),
        "prefixlen": iface.network.prefixlen,
    }
    if iface.version == 6:
        kwargs["flags"] = IFA_F_NODAD
    try:
        ipr.addr("add", **kwargs)
    except NetlinkError as exc:
        raise KernelError(errno_text(exc)) from exc


def addresses_of(ipr: IPRoute, index: int) -> set[IPInterface]:
    """Global-scope addresses on link ``index``."""
    out: set[IPInterface] = set()
    for msg in ipr.addr("dump", index=index):
        if msg["scope"] != 0:
            continue
        addr = msg.get_attr("IFA_ADDRESS")
        out.add(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
    return out


def default_gateways(ipr: IPRoute, index: int) -> set[IPAddress]:
    """Gateways of the default routes (main table) that leave through link ``index``."""
    out: set[IPAddress] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_default_routes(family=family):
            gw = msg.get_attr("RTA_GATEWAY")
            if msg.get_attr("RTA_OIF") == index and gw:
                out.add(ipaddress.ip_address(gw))
    return out


def default_route_mtu(ipr: IPRoute) -> int:
    """MTU of the link carrying the default route (IPv4 first, then IPv6), else 1500."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            routes = list(ipr.get_default_routes(family=family))
        except NetlinkError as exc:
            raise kernel_error("reading default routes", exc) from exc
        for msg in routes:
            oif = msg.get_attr("RTA_OIF")
            if not oif:
                continue
            try:
                link = ipr.link("get", index=oif)[0]
            except NetlinkError:
                continue  # the link went away between the two requests
            return int(link.get_attr("IFLA_MTU"))
    return DEFAULT_MTU


def delete_link(ipr: IPRoute, ifname: str) -> bool:
    """Delete link ``ifname``; False if it did not exist. Other failures raise KernelError."""
    try:
        ipr.link("del", ifname=ifname)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise kernel_error(f'deleting link "{ifname}"', exc) from exc
    return True


def tagged_links(ipr: IPRoute, prefix: str, kinds: tuple[str, ...] | None = None) -> dict[str, str]:
    """``{ifalias: ifname}`` for every link whose ifalias starts with ``prefix`` (and, with
    ``kinds``, whose link kind is one of them: each driver lists only its own objects)."""
    out: dict[str, str] = {}
    try:
        links = list(ipr.link("dump"))
    except NetlinkError as exc:
        raise kernel_error("listing links", exc) from exc
    for msg in links:
        alias = msg.get_attr("IFLA_IFALIAS")
        if alias and alias.startswith(prefix):
            if kinds is not None and link_kind(msg) not in kinds:
                continue
            out[alias] = msg.get_attr("IFLA_IFNAME")
    return out
