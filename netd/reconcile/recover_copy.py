"""What the recovery copy adds to `netd recover` (pure): the user's configuration, checked
against the kernel.

The two sources answer different questions. The kernel says what *exists*: a tagged bridge is a
network, a tagged host veth an endpoint, and the addresses and MAC in the container are the
ones in use. The copy (:mod:`netd.store.mirror`) says what the user *configured*: names, labels,
options, owners, ip ranges, DNS names, aliases, hostnames, published ports. So:

- a network in the copy is recovered from its record, bridge or not: networks outlive reboots,
  and the daemon re-creates a missing bridge at start (as it does after every reboot);
- an endpoint is recovered from its record only if its host veth exists (a copy record without
  a veth is a container that is gone, or one the copy lagged behind); the kernel's addresses,
  MAC and namespace win where they differ from the record, and the report says so. IPAM-only
  attachments (no veth of netd's) are kept from the copy, since nothing in the kernel is theirs;
- a bridge or veth the copy does not know is recovered from the kernel alone, as without a copy.

The copy may lag the lost database by one change (a crash between the commit and the copy
write): then an attach appears in its ``creating`` state, which the daemon undoes at start as it
would have with the database (the runtime never saw that attach succeed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..model import Endpoint, IPInterface, Network
from ..names import endpoint_tag
from ..store.mirror import CopyContents

EndpointKey = tuple[str, str, str]  # (net12, ifname, container id as the veth's tag holds it)


def tag_key(endpoint: Endpoint) -> EndpointKey:
    """The key under which the kernel scan sees ``endpoint``'s veth (its tag may be cut)."""
    tag = endpoint_tag(endpoint.network_id, endpoint.container_id, endpoint.ifname)
    net12, ifname, cid = tag[len("netd:") :].split(":", 2)
    return net12, ifname, cid


def index_endpoints(copy: CopyContents) -> dict[EndpointKey, Endpoint]:
    """The copy's endpoints that have a veth of netd's, by the key of their veth's tag."""
    return {tag_key(ep): ep for eps in copy.endpoints.values() for ep in eps if ep.host_ifname}


def check_network(net: Network, bridge_subnets: set[str]) -> list[str]:
    """What the report must say when a bridge disagrees with its network's record."""
    recorded = {f"{s.gateway}/{s.subnet.prefixlen}" for s in net.subnets if s.gateway}
    if bridge_subnets and recorded != bridge_subnets:
        return [
            f"network {net.name} ({net.short_id}): the bridge has {sorted(bridge_subnets)}, the "
            f"copy {sorted(recorded)}; the copy's subnets are kept (the daemon converges the "
            "bridge to them at start)"
        ]
    return []


def merge_endpoint(
    record: Endpoint,
    *,
    host_ifname: str,
    host_mac: str,
    peer: tuple[str, str, tuple[IPInterface, ...]] | None,
    same_netns: Callable[[str, str], bool],
) -> tuple[Endpoint, list[str]]:
    """The copy's record of an endpoint whose veth exists, corrected by the kernel.

    ``peer`` is ``(netns path, mac, addresses in the network's subnets)`` as read in the
    container, None when its namespace was not found. Returns the record and report lines.
    """
    what = f"endpoint {record.container_id[:12]}/{record.ifname}"
    notes: list[str] = []
    ep = replace(record, host_ifname=host_ifname, host_mac=host_mac)
    if peer is None:
        notes.append(
            f"{what}: its namespace was not found by the scan; kept as the copy records it "
            f"({record.netns})"
        )
        return ep, notes
    netns, mac, addresses = peer
    if not same_netns(record.netns, netns):
        notes.append(
            f"{what}: the copy says namespace {record.netns}, the kernel {netns}; kernel kept"
        )
        ep = replace(ep, netns=netns, netns_inode=0)
    if set(record.addresses) != set(addresses):
        shown = " ".join(str(a) for a in addresses)
        notes.append(
            f"{what}: the container has {shown or 'no address'}, the copy "
            f"{' '.join(str(a) for a in record.addresses)}; the container's kept"
        )
        ep = replace(ep, addresses=addresses)
    if record.mac and mac and record.mac.lower() != mac.lower():
        notes.append(f"{what}: the container's MAC is {mac}, the copy's {record.mac}; kernel kept")
        ep = replace(ep, mac=mac)
    return ep, notes


def unique_name(name: str, net_id: str, taken: set[str]) -> tuple[str, list[str]]:
    """``name``, or ``recovered-<id12>`` if another recovered network already has it."""
    if name not in taken:
        return name, []
    other = f"recovered-{net_id[:12]}"
    return other, [f"name {name!r} of network {net_id[:12]}: already taken; now {other!r}"]
