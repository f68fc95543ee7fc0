"""The container side of an interface, written once for every driver: addresses, up, routes.

After a driver has put an interface into a container's namespace (the bridge driver's veth
peer, the macvlan/ipvlan link), :func:`configure_interface` adds its addresses, brings it and
``lo`` up and adds the default routes, on one netlink socket opened inside the namespace, with
the batched requests of :mod:`netd.kernel.rtnl` (the CNI plugins' ``ipam.ConfigureIface`` plays
this part for bridge, macvlan and ipvlan alike). Each step is a fault point
``<driver>.addresses_added`` / ``.links_up`` / ``.routes_added``.

It does not create or delete the interface and does not roll back: the driver that made the
interface deletes it on failure, which takes its addresses and routes along.

:func:`check_interface` is the other half, for CHECK and the reconciler: what is not as
recorded on the container side, in words.
"""

from __future__ import annotations

import os

from .. import faults
from ..errors import InvalidInput, NetdError
from ..model import IPAddress, IPInterface
from . import links
from .netns import iproute_in_fd, netlink_socket_in, open_netns
from .rtnl import LOOPBACK_IFINDEX, Rtnl, add_default_route


def configure_interface(
    fd: int,
    ifname: str,
    addresses: tuple[IPInterface, ...],
    gateways: list[IPAddress],
    *,
    fault_prefix: str,
) -> None:
    """Addresses on ``ifname`` in namespace ``fd``, it and lo up, a default route per gateway.

    On an IPv4-only attachment the interface gets no IPv6 link-local address (as Docker 27+
    does): otherwise its DAD, MLD and router solicitations reach every other container on the
    segment, work that grows with the number of containers.
    """
    with Rtnl(netlink_socket_in(fd)) as rtnl:
        index = rtnl.link_index(ifname)
        rtnl.add_addresses(index, ifname, addresses)
        faults.point(f"{fault_prefix}.addresses_added")
        v6 = any(a.version == 6 for a in addresses)
        rtnl.set_up(
            {index: ifname, LOOPBACK_IFINDEX: "lo"},
            no_link_local=() if v6 else (index,),
        )
        faults.point(f"{fault_prefix}.links_up")
        for gateway in gateways:
            add_default_route(rtnl, gateway, index)
        faults.point(f"{fault_prefix}.routes_added")


def check_interface(
    netns: str,
    netns_inode: int,
    ifname: str,
    addresses: tuple[IPInterface, ...],
    gateways: list[IPAddress],
    *,
    kind: str | None = None,
) -> list[str]:
    """What is not as recorded for ``ifname`` inside namespace ``netns``: the interface is
    missing, of another ``kind``, down, lacks one of ``addresses`` or a default route via one
    of ``gateways``. Empty when healthy; an unusable namespace is one problem."""
    where = f"{ifname} in {netns}"
    try:
        fd = open_netns(netns, netns_inode)
    except InvalidInput as exc:
        return [f"netns {netns!r} unusable: {exc.rule}"]
    problems: list[str] = []
    try:
        with iproute_in_fd(fd) as cipr:
            link = links.get_link(cipr, ifname)
            if link is None:
                return [f"interface {where} missing"]
            if kind is not None and links.link_kind(link) != kind:
                return [f"interface {where} is not a {kind} link"]
            if not link["flags"] & links.IFF_UP:
                problems.append(f"interface {where} is down")
            present = links.addresses_of(cipr, link["index"])
            routes = links.default_gateways(cipr, link["index"])
    except NetdError as exc:
        return [*problems, f"{exc.message} (in {netns})"]
    finally:
        os.close(fd)
    problems += [f"address {a} missing on {where}" for a in addresses if a not in present]
    problems += [f"default route via {g} missing on {where}" for g in gateways if g not in routes]
    return problems


def forget_neighbours(netns: str, netns_inode: int, ifname: str, stale: dict[str, str]) -> int:
    """Delete the container's neighbour entries on ``ifname`` that name a MAC that is no
    longer where the address lives (``stale``: address → the MAC that left); the number
    deleted.

    An overlay address can move to another container on another node (a removed node's
    address handed out again). The container would keep sending to the old MAC until its
    kernel re-probes the entry, up to a minute later; deleting the entry makes its next packet
    ask again, and the node's VXLAN proxy answers with the new MAC at once. An entry that
    already names another MAC is left alone. A namespace that is gone is not an error.
    """
    try:
        fd = open_netns(netns, netns_inode)
    except NetdError:
        return 0
    deleted = 0
    try:
        with iproute_in_fd(fd) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return 0
            for entry in ipr.get_neighbours(ifindex=found[0]):
                address = entry.get_attr("NDA_DST")
                mac = (entry.get_attr("NDA_LLADDR") or "").lower()
                if address in stale and stale[address] == mac:
                    try:
                        ipr.neigh("del", dst=address, ifindex=found[0])
                        deleted += 1
                    except OSError:
                        continue  # expired meanwhile
    finally:
        os.close(fd)
    return deleted
