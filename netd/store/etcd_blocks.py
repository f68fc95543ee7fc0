"""Where IPAM blocks live in etcd and which of a node's blocks are empty: pure, no I/O.

A global network's addresses are allocated by blocks (netd.ipam.blocks; docs/ipam.md,
"Cluster-wide blocks"); etcd keeps who owns each block under ``<prefix>blocks/<net>/<cidr>``.
This module turns addresses into those keys and finds, from range reads, a node's blocks that
hold no allocation. :mod:`netd.store.etcd` does the reads and the transactions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from ..errors import StoreCorrupt
from ..ipam.blocks import block_of, family_prefixlen
from ..model import IPAddress, Network
from . import etcd_txn as t

# Drivers whose networks span nodes, so their addresses are allocated by blocks. (Later the
# driver's Capabilities.scope == "global" decides; the store only sees the record.)
GLOBAL_DRIVERS = frozenset({"overlay"})


def block_keys(
    network: Network, addresses: Sequence[str], prefixlen: int, root: str
) -> dict[str, str]:
    """Address -> the key of its block (``root`` + CIDR) on a global network; {} otherwise.

    An address outside every subnet has no block (the store does not judge addresses).
    """
    if network.driver not in GLOBAL_DRIVERS:
        return {}
    out: dict[str, str] = {}
    for text in addresses:
        addr = ipaddress.ip_address(text)
        for s in network.subnets:
            if addr.version == s.subnet.version and addr in s.subnet:
                size = family_prefixlen(addr.version, prefixlen)
                out[text] = root + str(block_of(s.subnet, addr, size))
                break
    return out


def empty_blocks(
    node: str,
    blocks: Sequence[t.Entry],
    allocations: Sequence[t.Entry],
    blocks_root: str,
    allocations_root: str,
) -> list[tuple[t.Entry, str, str]]:
    """``node``'s blocks that hold no allocation: (entry, network id, CIDR), in key order.

    ``blocks`` and ``allocations`` are range reads under ``<prefix>blocks/`` and
    ``<prefix>allocations/`` (the roots), of one network or of all.
    """
    used: dict[str, list[IPAddress]] = {}
    for e in allocations:
        net, _, address = e.key[len(allocations_root) :].partition("/")
        try:
            used.setdefault(net, []).append(ipaddress.ip_address(address))
        except ValueError as err:
            raise StoreCorrupt(f"etcd key {e.key}: not an address") from err
    free: list[tuple[t.Entry, str, str]] = []
    for e in blocks:
        if e.value != node:
            continue
        net, _, cidr = e.key[len(blocks_root) :].partition("/")
        try:
            block = ipaddress.ip_network(cidr)
        except ValueError as err:
            raise StoreCorrupt(f"etcd key {e.key}: not a block") from err
        if not any(a in block for a in used.get(net, ())):
            free.append((e, net, cidr))
    return free
