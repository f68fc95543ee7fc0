"""The transaction of one ``EtcdStore.put_endpoint``, planned from what is known of etcd: pure.

A put is one etcd transaction whose compares are exactly what the write relies on: the network
unchanged, the endpoint key as known (absent for a new endpoint), every wanted address key absent
or held by this endpoint, and, on a global network of a store that has a node name, the IPAM
block of every newly acquired address either absent (claimed here: compare absent, put node) or
this node's (compare the value, put it again, so that releasing the block in between fails its
own compare). An address in another node's block is a borrow: the block is only compared to be
still that node's (a value compare, which the owner's own puts never break); the address key is
the guarantee. The caller sends the plan with the reads of the same keys as the failure branch,
so a lost compare costs no separate read: the answer is the next plan's :class:`PutView`.

``PutView`` comes either from the store's memory of what it last wrote and read (the optimistic
first try: one round trip for an ADD) or from those failure reads (exact). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import Conflict, InvalidInput
from . import etcd_txn as t


class BlockClaimed(Conflict):
    """A block the caller meant to claim is another node's (field ``block``, value its CIDR)."""

    def __init__(self, doing: str, network_name: str, cidr: str, owner: str) -> None:
        super().__init__(
            f'{doing}: IPAM block {cidr} on network "{network_name}" was claimed by node '
            f"{owner!r} first",
            field="block",
            value=cidr,
        )
        self.cidr = cidr
        self.owner = owner


def block_cidr(key: str) -> str:
    """The CIDR at the end of a block key (``.../blocks/<net>/10.60.0.64/26``)."""
    head, _, length = key.rpartition("/")
    return f"{head.rpartition('/')[2]}/{length}"


@dataclass(frozen=True)
class Held:
    """One key as known: its value and the revision that last wrote it."""

    value: str
    mod_revision: int


@dataclass
class PutView:
    """What a put's compares rest on: the revisions and holders of the keys it touches."""

    net_revision: int
    old: tuple[int, tuple[str, ...]] | None  # endpoint key: (mod revision, its addresses)
    held: dict[str, Held | None]  # address -> its allocation key, None if absent
    owners: dict[str, str | None] = field(default_factory=dict)  # block key -> node, or None


@dataclass(frozen=True)
class PutPlan:
    """The compares and operations of one put, and what it does to blocks."""

    guard: list[t.Json]
    ops: list[t.Json]
    claimed: tuple[str, ...]  # block keys written (claimed, or ours re-put)
    borrowed: tuple[str, ...]  # addresses placed in another node's block


@dataclass(frozen=True)
class PutKeys:
    """The keys of one put, built by the store (it owns the layout)."""

    network: str
    endpoint: str
    allocations: str  # the network's allocation keys' prefix: "<prefix>allocations/<net>/"
    blocks: Mapping[str, str]  # address -> block key (only on a global network with a node)

    def address(self, address: str) -> str:
        """The allocation key of ``address``."""
        return self.allocations + address


def plan_put(
    *,
    keys: PutKeys,
    view: PutView,
    addresses: Sequence[str],
    doc: str,
    holder: str,
    node: str | None,
    extra_ops: Sequence[t.Json],
    must_claim: frozenset[str],
    doing: str,
    network_name: str,
) -> PutPlan:
    """The transaction that stores the endpoint if ``view`` is still true.

    Raises Conflict naming the holder if an address belongs to another endpoint, and Conflict
    (field ``block``) if a block in ``must_claim`` (block keys) is another node's.
    """
    guard = [
        t.unchanged(keys.network, view.net_revision),
        t.unchanged(keys.endpoint, view.old[0] if view.old else 0),
    ]
    fresh = [a for a in addresses if (view.held.get(a) or Held("", 0)).value != holder]
    # A lost block claim is told first: the caller then skips the whole block, where "this
    # address is taken" would make it try the block's addresses one by one.
    for address in fresh:
        bkey = keys.blocks.get(address)
        owner = view.owners.get(bkey) if bkey is not None else None
        if node is not None and bkey in must_claim and owner is not None and owner != node:
            raise BlockClaimed(doing, network_name, block_cidr(bkey), owner)
    for address in addresses:
        found = view.held.get(address)
        if found is not None and found.value != holder:
            raise Conflict(
                f'{doing}: address {address} on network "{network_name}" is already '
                f"held by container {found.value.replace('/', ' interface ', 1)}",
                field="address",
                value=address,
            )
        guard.append(t.unchanged(keys.address(address), found.mod_revision if found else 0))
    stale = [a for a in (view.old[1] if view.old else ()) if a not in addresses]
    ops = [t.put(keys.endpoint, doc)]
    ops += [t.delete(keys.address(a)) for a in stale]
    ops += [t.put(keys.address(a), holder) for a in addresses]
    ops += list(extra_ops)
    claimed: list[str] = []
    borrowed: list[str] = []
    for address in fresh:
        bkey = keys.blocks.get(address)
        if bkey is None or node is None:
            continue
        if bkey in claimed:
            continue
        owner = view.owners.get(bkey)
        if owner is None:
            guard.append(t.absent(bkey))
        elif owner == node:
            guard.append(t.value_is(bkey, node))
        else:
            # Still that node's (its own puts leave the value alone): if it was released
            # meanwhile, the retry claims it instead of borrowing from nobody.
            guard.append(t.value_is(bkey, owner))
            borrowed.append(address)
            continue
        ops.append(t.put(bkey, node))
        claimed.append(bkey)
    return PutPlan(guard, ops, tuple(claimed), tuple(borrowed))


def check_node(node: object) -> str | None:
    """A node name as stored in block keys' values; InvalidInput if it cannot be one."""
    if node is None:
        return None
    if (
        not isinstance(node, str)
        or not node
        or len(node) > 253
        or any(c.isspace() or c == "/" or not c.isprintable() for c in node)
    ):
        raise InvalidInput(
            "node_name", node, "must be 1-253 printable characters without spaces or '/'"
        )
    return node
