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
