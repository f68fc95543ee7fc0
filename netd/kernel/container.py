"""The container side of an interface, written once for every driver: addresses, up, routes.

After a driver has put an interface into a container's namespace (the bridge driver's veth
peer, the macvlan/ipvlan link), :func:`configure_interface` adds its addresses, brings it and
``lo`` up and adds the default routes, on one netlink socket opened inside the namespace, with
the batched requests of :mod:`netd.kernel.rtnl` (the CNI plugins' ``ipam.ConfigureIface`` plays
this part for bridge, macvlan and ipvlan alike). Each step is a fault point
``<driver>.addresses_added`` / ``.links_up`` / ``.routes_added``.

It does not create or delete the interface and does not roll back: the driver that made the
interface deletes it on failure, which takes its addresses and routes along.
"""

from __future__ import annotations

from .. import faults
from ..model import IPAddress, IPInterface
from .netns import netlink_socket_in
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
