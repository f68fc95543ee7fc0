"""What an overlay network's VXLAN device must hold for its remote peers (pure; no kernel).

A remote peer is one address of a container on another node: its IP, its MAC and the node's
underlay address (the VTEP). The VXLAN device holds, per peer, one FDB entry (MAC → VTEP:
where to send frames for that MAC) and one neighbour entry (IP → MAC: what the device's ARP
and NDP proxy answers). :func:`plan_peers` compares that with what the kernel holds and says
what to add and remove, so :meth:`OverlayDriver.sync_remote` converges in a few requests and
does nothing when nothing changed.

Rules where the input disagrees with itself (the cluster may briefly hold two records for one
container during a move): a MAC names one VTEP, an IP one MAC, the first in the given order
wins and the others are reported as conflicts; a peer on this node's own VTEP is left out (its
container is on the local bridge: an FDB entry would send its frames back to ourselves).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ..model import IPAddress


@dataclass(frozen=True)
class RemotePeer:
    """One address of a container on another node of an overlay network."""

    ip: IPAddress
    mac: str  # lower case, ``aa:bb:cc:dd:ee:ff``
    vtep: IPv4Address  # the node's underlay address


@dataclass(frozen=True)
class PeerPlan:
    """The kernel requests that make a VXLAN device's entries exactly the wanted ones."""

    fdb_del: tuple[tuple[str, IPv4Address], ...] = ()
    fdb_add: tuple[tuple[str, IPv4Address], ...] = ()
    neigh_del: tuple[IPAddress, ...] = ()
    neigh_set: tuple[tuple[IPAddress, str], ...] = ()  # added, or changed to this MAC
    conflicts: tuple[str, ...] = field(default=(), compare=False)

    @property
    def empty(self) -> bool:
        """Nothing to change."""
        return not (self.fdb_del or self.fdb_add or self.neigh_del or self.neigh_set)


def wanted_entries(
    peers: Iterable[RemotePeer], local_vtep: IPv4Address | None = None
) -> tuple[dict[str, IPv4Address], dict[IPAddress, str], list[str]]:
    """``({mac: vtep}, {ip: mac}, conflicts)`` for ``peers`` (rules in the module docstring)."""
    fdb: dict[str, IPv4Address] = {}
    neigh: dict[IPAddress, str] = {}
    conflicts: list[str] = []
    for peer in peers:
        mac = peer.mac.lower()
        if peer.vtep == local_vtep:
            continue
        if fdb.setdefault(mac, peer.vtep) != peer.vtep:
            conflicts.append(f"MAC {mac} on {peer.vtep} and {fdb[mac]}: kept {fdb[mac]}")
            continue
        if neigh.setdefault(peer.ip, mac) != mac:
            conflicts.append(f"IP {peer.ip} at {mac} and {neigh[peer.ip]}: kept {neigh[peer.ip]}")
    return fdb, neigh, conflicts


def entries_of(
    peers: Iterable[RemotePeer], local_vtep: IPv4Address | None = None
) -> tuple[dict[str, set[IPv4Address]], dict[IPAddress, str]]:
    """The entries a device holds once ``peers`` were programmed, in the form
    :func:`plan_peers` reads the kernel's (MAC → VTEPs, IP → MAC)."""
    fdb, neigh, _ = wanted_entries(peers, local_vtep)
    return {mac: {vtep} for mac, vtep in fdb.items()}, neigh


def plan_peers(
    peers: Iterable[RemotePeer],
    fdb_now: Mapping[str, Iterable[IPv4Address]],
    neigh_now: Mapping[IPAddress, str],
    local_vtep: IPv4Address | None = None,
) -> PeerPlan:
    """What to remove and add so the device holds exactly ``peers``' entries.

    ``fdb_now``: the device's remote FDB entries, MAC → VTEPs (the kernel allows several per
    MAC; each extra one is removed); ``neigh_now``: its permanent neighbour entries, IP → MAC.
    """
    fdb, neigh, conflicts = wanted_entries(peers, local_vtep)
    now = {(mac.lower(), vtep) for mac, vteps in fdb_now.items() for vtep in vteps}
    want = set(fdb.items())
    neigh_low = {ip: mac.lower() for ip, mac in neigh_now.items()}
    return PeerPlan(
        fdb_del=tuple(sorted(now - want, key=_fdb_key)),
        fdb_add=tuple(sorted(want - now, key=_fdb_key)),
        neigh_del=tuple(sorted(set(neigh_low) - set(neigh), key=_ip_key)),
        neigh_set=tuple(
            sorted(
                ((ip, mac) for ip, mac in neigh.items() if neigh_low.get(ip) != mac),
                key=lambda item: _ip_key(item[0]),
            )
        ),
        conflicts=tuple(conflicts),
    )


def _fdb_key(entry: tuple[str, IPv4Address]) -> tuple[str, int]:
    return entry[0], int(entry[1])


def _ip_key(ip: IPAddress) -> tuple[int, int]:
    return ip.version, int(ip)
