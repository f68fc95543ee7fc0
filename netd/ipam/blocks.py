"""Cluster-wide IPAM by address blocks, as Calico does it: pure, no I/O.

An overlay network's subnet is cut into aligned **blocks** (``ipam_block_size``, default /26:
64 addresses). A node allocates inside the blocks it owns; when they are full it takes the first
unclaimed block (the store claims it in the same transaction that records the address); only
when no block of the subnet has room does it borrow a single free address from another node's
block. Address keys in the store stay the one guarantee that no address is held twice; blocks
only keep nodes out of each other's way, so that allocations rarely race on the same key.

- :func:`split`, :func:`block_of`, :func:`block_index`, :func:`block_at`: block arithmetic. A
  subnet smaller than a block is one block (itself). Blocks are numbered from the subnet's
  start, so the arithmetic is O(1) even for an IPv6 /64 (2**58 blocks of /122).
- :func:`family_prefixlen`: one setting serves both families. The configured size is an IPv4
  prefix length; an IPv6 block has as many host bits (/26 -> /122, Calico's IPv6 default).
- :class:`BlockAllocator`: a :class:`~netd.ipam.allocator.NetworkAllocator` (same methods:
  ``allocate``, ``commit``, ``release``, ``taken``, ``reserved``, ``utilisation``,
  ``cursors``) whose dynamic pick follows the block policy, plus ``set_view`` to refresh the
  owners and taken addresses from the cluster and ``claims``/``borrows`` to tell what an
  allocation would do to blocks.

The search for an unclaimed block starts, as Calico's ``randomBlockGenerator`` does, at a block
derived from a hash of the node name and walks forward, wrapping: nodes that start together do
not all race for the first block. Cursors are kept per block (keyed by the block's CIDR), so
each node writes only its own blocks' cursors and no cursor key is shared by the cluster.

Not here: the store transaction (netd/store/etcd.py), watches, node liveness. Not thread-safe:
the caller serialises calls per network, as for NetworkAllocator.
"""

from __future__ import annotations

import hashlib
import ipaddress
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ..errors import InvalidInput
from ..model import IPAddress, IPInterface, IPNetwork, Network
from .allocator import NetworkAllocator, _as_address, _SubnetState
from .index import AddressIndex

DEFAULT_BLOCK_PREFIXLEN = 26  # 64 addresses, Calico's default
MIN_BLOCK_PREFIXLEN = 16  # a block larger than a /16 would rarely be shared fairly
MAX_BLOCK_PREFIXLEN = 32  # one address per block: a claim per allocation (allowed, not wise)
V6_OFFSET = 128 - 32  # an IPv6 block keeps the host-bit count of the IPv4 setting


def check_block_prefixlen(prefixlen: object) -> int:
    """The configured block size (an IPv4 prefix length); InvalidInput outside 16..32."""
    if (
        not isinstance(prefixlen, int)
        or isinstance(prefixlen, bool)
        or not MIN_BLOCK_PREFIXLEN <= prefixlen <= MAX_BLOCK_PREFIXLEN
    ):
        raise InvalidInput(
            "ipam_block_size",
            prefixlen,
            f"must be an IPv4 prefix length from {MIN_BLOCK_PREFIXLEN} to {MAX_BLOCK_PREFIXLEN} "
            f"(default {DEFAULT_BLOCK_PREFIXLEN}: 64 addresses; IPv6 blocks get the same number "
            "of host bits)",
        )
    return prefixlen


def family_prefixlen(version: int, prefixlen: int) -> int:
    """The block prefix length for IP ``version`` from the configured (IPv4) one."""
    check_block_prefixlen(prefixlen)
    return prefixlen if version == 4 else prefixlen + V6_OFFSET


def _host_bits(subnet: IPNetwork, prefixlen: int) -> int:
    if not 0 <= prefixlen <= subnet.max_prefixlen:
        raise InvalidInput(
            "prefixlen", prefixlen, f"not a prefix length of IPv{subnet.version} ({subnet})"
        )
    return subnet.max_prefixlen - max(subnet.prefixlen, prefixlen)


def block_count(subnet: IPNetwork, prefixlen: int) -> int:
    """How many blocks of /``prefixlen`` ``subnet`` holds (1 if it is smaller than a block)."""
    return subnet.num_addresses >> _host_bits(subnet, prefixlen)


def block_at(subnet: IPNetwork, prefixlen: int, index: int) -> IPNetwork:
    """Block number ``index`` (from 0) of ``subnet``; InvalidInput if there is no such block."""
    bits = _host_bits(subnet, prefixlen)
    if not 0 <= index < block_count(subnet, prefixlen):
        raise InvalidInput("block", index, f"{subnet} has {block_count(subnet, prefixlen)} blocks")
    start = int(subnet.network_address) + (index << bits)
    return ipaddress.ip_network((start, subnet.max_prefixlen - bits))


def block_index(subnet: IPNetwork, ip: IPAddress, prefixlen: int) -> int:
    """The number of the block of ``subnet`` that holds ``ip``; InvalidInput if outside."""
    if ip.version != subnet.version or ip not in subnet:
        raise InvalidInput("address", str(ip), f"not inside subnet {subnet}")
    return (int(ip) - int(subnet.network_address)) >> _host_bits(subnet, prefixlen)


def block_of(subnet: IPNetwork, ip: IPAddress, prefixlen: int) -> IPNetwork:
    """The block of ``subnet`` (size /``prefixlen``, or the subnet if smaller) holding ``ip``."""
    return block_at(subnet, prefixlen, block_index(subnet, ip, prefixlen))


def split(subnet: IPNetwork, prefixlen: int) -> Iterator[IPNetwork]:
    """The blocks of ``subnet`` in address order, lazily (an IPv6 /64 has 2**58 of /122)."""
    for index in range(block_count(subnet, prefixlen)):
        yield block_at(subnet, prefixlen, index)


def node_offset(node: str, count: int) -> int:
    """Where ``node`` starts looking for an unclaimed block among ``count`` (stable hash)."""
    digest = hashlib.sha256(node.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count if count > 0 else 0


@dataclass(eq=False)
class _Blocks:
    """The blocks of one subnet: size, owners by block number, and the search's start."""

    state: _SubnetState
    prefixlen: int  # of this subnet's blocks (the subnet's own if it is smaller)
    bits: int  # host bits of a block
    base: int  # the subnet's first address, as an int
    first: int  # number of the first block the dynamic range touches
    last: int  # and of the last
    start: int  # where this node's search for an unclaimed block starts
    borrow_from: int  # and its search for an address to borrow (an address, not a block)
    owners: dict[int, str] = field(default_factory=dict)
    mine: list[int] = field(default_factory=list)  # sorted numbers of this node's blocks

    def number(self, value: int) -> int:
        return (value - self.base) >> self.bits

    def span(self, number: int) -> tuple[int, int]:
        """The dynamic addresses of block ``number`` as an inclusive int range (may be empty)."""
        lo = self.base + (number << self.bits)
        hi = lo + (1 << self.bits) - 1
        return max(lo, self.state.lo), min(hi, self.state.hi)

    def cidr(self, number: int) -> str:
        return str(ipaddress.ip_network((self.base + (number << self.bits), self.prefixlen)))

    def free_in(self, number: int, cursors: Mapping[str, IPAddress]) -> int | None:
        """The next free dynamic address of block ``number`` after its cursor, wrapping."""
        lo, hi = self.span(number)
        cursor = cursors.get(self.cidr(number))
        start = int(cursor) + 1 if cursor is not None else lo
        return self.state.index.next_free(start, lo, hi)

    def _first_free(self, lo: int, hi: int) -> int | None:
        # next_free wraps; starting at lo it cannot, so this is "first free in [lo, hi]".
        return self.state.index.next_free(lo, lo, hi) if lo <= hi else None

    def unclaimed_from(self, lo: int, hi: int) -> int | None:
        """Number of the first unclaimed block in ``[lo, hi]`` with a free dynamic address.

        Jumps from free address to free address and over runs of claimed blocks, so the cost
        follows the number of claimed blocks, not the size of the subnet.
        """
        pos = lo
        while True:
            found = self._first_free(pos, hi)
            if found is None:
                return None
            number = self.number(found)
            if number not in self.owners:
                return number
            while number + 1 in self.owners:
                number += 1
            pos = self.base + ((number + 1) << self.bits)

    def first_unclaimed(self) -> int | None:
        """The node's first unclaimed block with room, searching from its start, wrapping."""
        pivot = max(self.base + (self.start << self.bits), self.state.lo)
        found = self.unclaimed_from(pivot, self.state.hi)
        if found is None:
            found = self.unclaimed_from(self.state.lo, pivot - 1)
        return found

    def borrowable(self) -> int | None:
        """A free dynamic address anywhere, searching from the node's own point, wrapping.

        The point is an address hashed from the node name, not a block's start: owners fill
        their blocks upwards from the start, and borrowers that all began there would race
        them (and each other) for the same address.
        """
        return self.state.index.next_free(self.borrow_from, self.state.lo, self.state.hi)


class BlockAllocator(NetworkAllocator):
    """A network's allocation state on one node of a cluster, by Calico-style blocks.

    ``taken`` are the addresses held anywhere in the cluster, ``owners`` maps block CIDRs to
    node names (``EtcdStore.list_blocks``), ``cursors`` maps block CIDRs to the address last
    handed out in them (others are ignored). ``spread=False`` makes every node search for an
    unclaimed block from the subnet's start (for comparison in benchmarks and tests).
    """

    def __init__(
        self,
        network: Network,
        node: str,
        prefixlen: int = DEFAULT_BLOCK_PREFIXLEN,
        taken: Iterable[IPAddress | IPInterface] = (),
        owners: Mapping[str, str] | None = None,
        cursors: Mapping[str, IPAddress] | None = None,
        *,
        spread: bool = True,
    ) -> None:
        if not isinstance(node, str) or not node or node != node.strip():
            raise InvalidInput("node_name", node, "must be a non-empty name without spaces")
        self.node = node
        self.prefixlen = check_block_prefixlen(prefixlen)
        self.spread = spread
        self._blocks: list[_Blocks] = []
        self._last: dict[int, int] = {}  # subnet position -> block of the last dynamic pick
        super().__init__(network, taken, None)
        for state in self._subnets:
            bp = max(state.net.prefixlen, family_prefixlen(state.net.version, self.prefixlen))
            bits = state.net.max_prefixlen - bp
            base = int(state.net.network_address)
            first, last = (state.lo - base) >> bits, (state.hi - base) >> bits
            offset = node_offset(node, last - first + 1) if spread else 0
            point = node_offset(node + "/borrow", state.hi - state.lo + 1) if spread else 0
            self._blocks.append(
                _Blocks(state, bp, bits, base, first, last, first + offset, state.lo + point)
            )
        self._set_owners(owners or {})
        for key, addr in (cursors or {}).items():
            if self._cursor_fits(key, addr):
                self._cursors[key] = addr

    # --- the cluster's view ------------------------------------------------------------------

    def _parse_owners(self, owners: Mapping[str, str]) -> list[dict[int, str]]:
        out: list[dict[int, str]] = [{} for _ in self._blocks]
        for cidr, node in owners.items():
            where = self._block_named(cidr)
            if where is None:
                raise InvalidInput(
                    "blocks",
                    cidr,
                    f"not a /{self.prefixlen} block (IPv6: /{self.prefixlen + V6_OFFSET}) of a "
                    f'subnet of network "{self.network.name}"; every node must use the same '
                    "ipam_block_size",
                )
            pos, number = where
            out[pos][number] = node
        return out

    def _set_owners(self, owners: Mapping[str, str]) -> None:
        parsed = self._parse_owners(owners)
        for blocks, table in zip(self._blocks, parsed, strict=True):
            blocks.owners = table
            blocks.mine = sorted(n for n, who in table.items() if who == self.node)

    def _block_named(self, cidr: str) -> tuple[int, int] | None:
        """(subnet position, block number) of the block written ``cidr``, or None."""
        try:
            net = ipaddress.ip_network(cidr)
        except (ValueError, TypeError):
            return None
        for pos, blocks in enumerate(self._blocks):
            outer = blocks.state.net
            if (
                net.version == outer.version
                and net.prefixlen == blocks.prefixlen
                and net.network_address in outer
            ):
                return pos, blocks.number(int(net.network_address))
        return None

    def set_view(self, owners: Mapping[str, str], taken: Iterable[IPAddress | IPInterface]) -> None:
        """Replace the block owners and the taken addresses with the cluster's (cursors kept).

        All or nothing: InvalidInput for a block or address this network cannot have.
        """
        parsed = self._parse_owners(owners)
        indexes = [AddressIndex(b.state.reserved) for b in self._blocks]
        for value in taken:
            addr = _as_address(value)
            owner = self._owner(addr)
            if owner is None:
                raise InvalidInput("taken", str(addr), self._outside_rule())
            indexes[self._subnets.index(owner)].add(int(addr))
        for blocks, table, index in zip(self._blocks, parsed, indexes, strict=True):
            blocks.owners = table
            blocks.mine = sorted(n for n, who in table.items() if who == self.node)
            blocks.state.index = index

    def observe(
        self,
        *,
        owners: Mapping[str, str | None] | None = None,
        taken: Iterable[IPAddress | IPInterface] = (),
        freed: Iterable[IPAddress | IPInterface] = (),
    ) -> None:
        """Apply changes seen in the cluster: a watch event, or what a refusal revealed.

        ``owners`` maps block CIDRs to their new owner (None: released), ``taken`` and
        ``freed`` are addresses now held or no longer held. All or nothing: InvalidInput for a
        block or address this network cannot have. Cheaper than :meth:`set_view` by far.
        """
        changes = owners or {}
        parsed = self._parse_owners({c: who or "" for c, who in changes.items()})
        taking = [_as_address(a) for a in taken]
        freeing = [_as_address(a) for a in freed]
        for addr in (*taking, *freeing):
            if self._owner(addr) is None:
                raise InvalidInput("taken", str(addr), self._outside_rule())
        for blocks, table in zip(self._blocks, parsed, strict=True):
            for number, who in table.items():
                if who:
                    blocks.owners[number] = who
                else:
                    blocks.owners.pop(number, None)
            if table:
                blocks.mine = sorted(n for n, w in blocks.owners.items() if w == self.node)
        for addr in taking:
            state = self._owner(addr)
            assert state is not None  # checked above
            state.index.add(int(addr))
        self.release(freeing)

    @property
    def owners(self) -> dict[str, str]:
        """Block CIDR -> owning node, as this allocator sees the cluster (a copy)."""
        return {b.cidr(n): who for b in self._blocks for n, who in sorted(b.owners.items())}

    def own_blocks(self) -> list[str]:
        """The CIDRs of this node's blocks, in address order."""
        return [b.cidr(n) for b in self._blocks for n in b.mine]

    def _locate(self, addr: IPAddress) -> tuple[_Blocks, int] | None:
        state = self._owner(addr)
        if state is None:
            return None
        blocks = self._blocks[self._subnets.index(state)]
        return blocks, blocks.number(int(addr))

    def claims(self, addresses: Iterable[IPAddress | IPInterface]) -> list[str]:
        """The blocks (CIDRs) storing ``addresses`` would newly claim: those nobody owns."""
        out: list[str] = []
        for value in addresses:
            where = self._locate(_as_address(value))
            if where is not None and where[1] not in where[0].owners:
                cidr = where[0].cidr(where[1])
                if cidr not in out:
                    out.append(cidr)
        return out

    def borrows(self, addresses: Iterable[IPAddress | IPInterface]) -> list[IPAddress]:
        """Those of ``addresses`` that lie in another node's block."""
        out: list[IPAddress] = []
        for value in addresses:
            addr = _as_address(value)
            where = self._locate(addr)
            if where is not None and where[0].owners.get(where[1], self.node) != self.node:
                out.append(addr)
        return out

    # --- hooks of NetworkAllocator -----------------------------------------------------------

    def _cursor_fits(self, key: str, addr: IPAddress) -> bool:
        if not self._blocks:  # called by the base constructor before blocks exist: none fit
            return False
        where = self._block_named(key)
        return where is not None and addr in ipaddress.ip_network(key)

    def _pick(
        self, candidates: list[tuple[int, _SubnetState]], cursors: dict[str, IPAddress]
    ) -> tuple[int, int] | None:
        """Own blocks first, then the first unclaimed block, then borrow (Calico's order)."""
        for pos, _ in candidates:  # 1. own blocks, continuing in the last block used
            blocks = self._blocks[pos]
            mine = blocks.mine
            if not mine:
                continue
            at = bisect_left(mine, self._last.get(pos, mine[0])) % len(mine)
            for number in mine[at:] + mine[:at]:
                value = blocks.free_in(number, cursors)
                if value is not None:
                    cursors[blocks.cidr(number)] = ipaddress.ip_address(value)
                    return pos, value
        for pos, _ in candidates:  # 2. claim: the first unclaimed block with room
            blocks = self._blocks[pos]
            fresh = blocks.first_unclaimed()
            if fresh is not None:
                value = blocks.free_in(fresh, cursors)
                if value is not None:
                    cursors[blocks.cidr(fresh)] = ipaddress.ip_address(value)
                    return pos, value
        for pos, _ in candidates:  # 3. borrow one address from another node's block
            value = self._blocks[pos].borrowable()
            if value is not None:
                return pos, value  # another node's cursor is not ours to move
        return None

    # --- allocation --------------------------------------------------------------------------

    def allocate(
        self, static: Iterable[str] = ()
    ) -> tuple[list[IPInterface], dict[str, IPAddress]]:
        """As :meth:`NetworkAllocator.allocate`, by blocks; returns only the cursors it moved.

        Only moved cursors, because each belongs to one block and so to one node: writing the
        whole map back would overwrite other nodes' cursors with stale values.
        """
        addresses, cursors = super().allocate(tuple(static))
        moved = {k: v for k, v in cursors.items() if self._cursors.get(k) != v}
        return addresses, moved

    def commit(
        self,
        addresses: Iterable[IPAddress | IPInterface],
        cursors: Mapping[str, IPAddress] | None = None,
    ) -> None:
        """As :meth:`NetworkAllocator.commit`; the blocks the store just claimed become ours.

        If another node won a block first, the store recorded a borrow instead (or refused,
        when told the claims); the next :meth:`set_view` shows the real owner.
        """
        values = [_as_address(a) for a in addresses]
        super().commit(values, cursors)
        for addr in values:
            where = self._locate(addr)
            if where is None:
                continue
            blocks, number = where
            if number not in blocks.owners:
                blocks.owners[number] = self.node
                insort(blocks.mine, number)
        for key in cursors or {}:
            named = self._block_named(key)
            if named is not None and named[1] in self._blocks[named[0]].mine:
                self._last[named[0]] = named[1]
