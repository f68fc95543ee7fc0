"""DNS upstreams a rootless owner may name: none that lead back into the host.

The DNS worker forwards a network's queries to the upstreams of the network option
``dns_servers`` or of the endpoint's ``dns_servers``, from the host's network namespace. An
upstream on the host's loopback, on a link-local address or on one of the host's own addresses
would therefore deliver datagrams of the owner's choosing to services that listen only inside
the host (a resolver stub, a database bound to 127.0.0.1, a metadata service at
169.254.169.254), which the owner's containers cannot reach themselves. So an owner may not
name, as an upstream:

- loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10), unspecified and
  "this network" (0.0.0.0/8, ::: connecting to them reaches the host itself), multicast and
  the limited broadcast address, IPv4-mapped IPv6 forms of any of these;
- any address configured on an interface of the daemon's namespace (read from the kernel at
  validation time: netd's own bridge gateways included, which would loop into netd's DNS);
- any address inside a subnet of a netd network the owner does not own: the worker's
  datagrams leave from the host, which reaches every bridge, so they would cross the isolation
  between networks to other users' (or root's) containers. Upstreams inside the owner's own
  networks (a resolver container of theirs) are fine.

Root and ``policy.admins`` are not checked: they may point a network at a local resolver on
purpose. Pure checks take the host's addresses as an argument; :func:`host_addresses` reads
them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ..dns.upstreams import parse_server
from ..errors import PermissionDenied
from ..model import IPAddress, IPNetwork

THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # RFC 1122 3.2.1.3: "this host on this network"
LIMITED_BROADCAST = ipaddress.ip_address("255.255.255.255")


def host_addresses() -> set[IPAddress]:
    """Every address on an interface of the daemon's network namespace (netlink dump)."""
    from pyroute2 import IPRoute

    out: set[IPAddress] = set()
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr:
                out.add(ipaddress.ip_address(str(addr).split("%")[0]))
    return out


def why_refused(
    addr: IPAddress, host: Iterable[IPAddress], others: Sequence[IPNetwork] = ()
) -> str | None:
    """What makes ``addr`` an upstream an owner may not name, or None if it is fine.

    ``host``: the addresses of the daemon's namespace; ``others``: subnets of netd networks
    that are not the owner's.
    """
    plain = addr
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        plain = addr.ipv4_mapped
    if plain.is_loopback:
        return "a loopback address"
    if plain.is_link_local:
        return "a link-local address"
    if plain.is_unspecified or (plain.version == 4 and plain in THIS_NETWORK):
        return "an unspecified address (it reaches the host itself)"
    if plain.is_multicast or plain == LIMITED_BROADCAST:
        return "a multicast or broadcast address"
    if plain in {ipaddress.ip_address(a) for a in host} or addr in set(host):
        return "an address of the host"
    if any(plain.version == net.version and plain in net for net in others):
        return "an address on a network that is not yours"
    return None


def check_upstreams(
    field: str,
    servers: Iterable[str],
    host: Iterable[IPAddress],
    others: Sequence[IPNetwork] = (),
) -> None:
    """PermissionDenied naming ``field`` and the first server an owner may not forward to."""
    host_set = set(host)
    for text in servers:
        address, _ = parse_server(text)
        reason = why_refused(ipaddress.ip_address(address), host_set, others)
        if reason is not None:
            raise PermissionDenied(
                f"{field} {text!r}: {address} is {reason}; rootless owners may not forward DNS "
                "to loopback, link-local, unspecified, multicast or the host's own addresses, "
                "nor into other users' networks (root and policy.admins may)",
                field=field,
                value=text,
            )
