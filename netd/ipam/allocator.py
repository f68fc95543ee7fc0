"""In-memory address allocation state of one network, rebuilt from the store at daemon start.

A :class:`NetworkAllocator` hands out one address per IP family per endpoint: dynamically,
round-robin inside each subnet's ``ip_range`` (or the whole subnet), or statically as asked.
It never hands out a subnet's network address, the IPv4 broadcast address, the IPv6
subnet-router anycast address, the gateway or an aux (reserved) address. The rules and the
reasons for them are written down in docs/ipam.md.

Allocation is two steps so the service can write the store in between: :meth:`allocate`
computes addresses and the new cursors without changing anything; :meth:`commit` marks them
taken. If the store write fails the service simply drops the result.

This module does no I/O, keeps no endpoint identities (idempotency per (container id, ifname)
is the service's job) and is not thread-safe: the service serialises calls per network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import AddressExhausted, Conflict, InvalidInput
from ..model import IPAddress, IPInterface, IPNetwork, Network, Subnet
from .index import AddressIndex

FIELD = "ips"


def family_name(version: int) -> str:
    """``IPv4`` or ``IPv6``, as messages spell it."""
    return f"IPv{version}"


def reserved_addresses(subnet: Subnet) -> dict[int, str]:
    """Addresses of ``subnet`` no endpoint may have, mapped to the reason, as ints.

    IPv4 subnets of /30 and wider lose their network and broadcast addresses; IPv6 subnets
    lose the subnet-router anycast address (RFC 4291 §2.6.1, the all-zero host part). The
    gateway and every aux address are reserved in both families.
    """
    net = subnet.subnet
    out: dict[int, str] = {}
    first = int(net.network_address)
    if net.version == 4:
        if net.prefixlen <= 30:
            out[first] = "is the network address"
            out[int(net.broadcast_address)] = "is the broadcast address"
    else:
        out[first] = "is the subnet-router anycast address"
    for name, addr in sorted(subnet.aux_addresses.items()):
        if addr in net:
            out.setdefault(int(addr), f"is reserved as aux address {name!r}")
    if subnet.gateway is not None and subnet.gateway in net:
        out[int(subnet.gateway)] = "is the gateway"
    return out


@dataclass(eq=False)
class _SubnetState:
    """Allocation state of one subnet: taken and reserved addresses and the dynamic range."""

    subnet: Subnet
    reserved: dict[int, str]
    lo: int
    hi: int
    index: AddressIndex = field(default_factory=AddressIndex)
    # Both derived once: they are read on every allocation.
    net: IPNetwork = field(init=False)
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.net = self.subnet.subnet
        self.key = str(self.subnet.subnet)

    def describe(self) -> str:
        if self.subnet.ip_range is not None and self.subnet.ip_range != self.net:
            return f"{self.net} (ip_range {self.subnet.ip_range})"
        return str(self.net)

    def interface(self, value: int) -> IPInterface:
        return ipaddress.ip_interface((value, self.net.prefixlen))


def _as_address(value: IPAddress | IPInterface) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return value.ip
    return value


class NetworkAllocator:
    """Allocation state of one network: taken addresses and a round-robin cursor per subnet."""

    def __init__(
        self,
        network: Network,
        taken: Iterable[IPAddress | IPInterface] = (),
        cursors: Mapping[str, IPAddress] | None = None,
    ) -> None:
        self.network = network
        self._subnets: list[_SubnetState] = []
        for sub in network.subnets:
            dyn = sub.ip_range if sub.ip_range is not None else sub.subnet
            reserved = reserved_addresses(sub)
            state = _SubnetState(
                subnet=sub,
                reserved=reserved,
                lo=int(dyn.network_address),
                hi=int(dyn.broadcast_address),
                index=AddressIndex(reserved),
            )
            self._subnets.append(state)
        for value in taken:
            addr = _as_address(value)
            owner = self._owner(addr)
            if owner is None:
                raise InvalidInput("taken", str(addr), self._outside_rule())
            owner.index.add(int(addr))
        self._cursors: dict[str, IPAddress] = {}
        for key, addr in (cursors or {}).items():
            if self._cursor_fits(key, addr):
                self._cursors[key] = addr

    # --- queries -------------------------------------------------------------------------

    def _by_key(self, key: str) -> _SubnetState | None:
        for state in self._subnets:
            if state.key == key:
                return state
        return None

    def _cursor_fits(self, key: str, addr: IPAddress) -> bool:
        """Whether ``key`` names a range this allocator keeps a cursor for and holds ``addr``."""
        known = self._by_key(key)
        return known is not None and addr in known.net

    def _owner(self, addr: IPAddress) -> _SubnetState | None:
        for state in self._subnets:
            if addr.version == state.net.version and addr in state.net:
                return state
        return None

    def _outside_rule(self) -> str:
        nets = ", ".join(str(s.net) for s in self._subnets) or "none"
        return f'not inside any subnet of network "{self.network.name}" ({nets})'

    @property
    def cursors(self) -> dict[str, IPAddress]:
        """The last dynamically handed-out address per subnet (a copy)."""
        return dict(self._cursors)

    def taken(self, addr: IPAddress | IPInterface) -> bool:
        """True if ``addr`` is held by an endpoint of this network (reserved ones are not)."""
        a = _as_address(addr)
        state = self._owner(a)
        return state is not None and int(a) not in state.reserved and int(a) in state.index

    def reserved(self, addr: IPAddress | IPInterface) -> bool:
        """True if ``addr`` is a network/broadcast/anycast, gateway or aux address."""
        a = _as_address(addr)
        state = self._owner(a)
        return state is not None and int(a) in state.reserved

    def utilisation(self) -> dict[str, tuple[int, int]]:
        """Per subnet: (addresses held by endpoints, addresses an endpoint could hold)."""
        return {
            s.key: (s.index.count - len(s.reserved), s.net.num_addresses - len(s.reserved))
            for s in self._subnets
        }

    # --- allocation ----------------------------------------------------------------------

    def _parse_static(self, text: object) -> tuple[IPAddress, _SubnetState]:
        """Validate one static request: an address (or CIDR whose prefix matches its subnet)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(FIELD, text, "must be an IP address such as 10.89.0.5")
        raw = text.strip()
        prefix: int | None = None
        try:
            if "/" in raw:
                iface = ipaddress.ip_interface(raw)
                addr: IPAddress = iface.ip
                prefix = iface.network.prefixlen
            else:
                addr = ipaddress.ip_address(raw)
        except ValueError as exc:
            raise InvalidInput(FIELD, text, "not an IP address") from exc
        state = self._owner(addr)
        if state is None:
            raise InvalidInput(FIELD, text, self._outside_rule())
        if prefix is not None and prefix != state.net.prefixlen:
            raise InvalidInput(
                FIELD, text, f"prefix length /{prefix} does not match subnet {state.net}"
            )
        reason = state.reserved.get(int(addr))
        if reason is not None:
            raise InvalidInput(FIELD, text, f"{reason} of subnet {state.net}")
        return addr, state

    def allocate(
        self, static: Sequence[str] = ()
    ) -> tuple[list[IPInterface], dict[str, IPAddress]]:
        """Pick one address per IP family of the network, without committing anything.

        ``static`` addresses replace the dynamic pick of their family (one per subnet, so a
        multi-subnet network may take several of one family). Returns the addresses, with
        their subnet's prefix length, IPv4 first, and the cursor map to pass to
        :meth:`commit`. Raises InvalidInput for a malformed or reserved static address,
        Conflict for one already taken, AddressExhausted when a family has no free address.
        """
        picked: dict[int, tuple[int, _SubnetState]] = {}  # subnet position -> (value, state)
        static_families: set[int] = set()
        for text in static:
            addr, state = self._parse_static(text)
            pos = self._subnets.index(state)
            if pos in picked:
                other = ipaddress.ip_address(picked[pos][0])
                raise InvalidInput(
                    FIELD,
                    text,
                    f"{other} is also requested in subnet {state.net}; "
                    "at most one address per subnet",
                )
            if int(addr) in state.index:
                raise Conflict(
                    f'allocating {addr} in network "{self.network.name}": address already in use',
                    field=FIELD,
                    value=str(addr),
                )
            picked[pos] = (int(addr), state)
            static_families.add(addr.version)

        cursors = dict(self._cursors)
        for version in (4, 6):
            candidates = [(p, s) for p, s in enumerate(self._subnets) if s.net.version == version]
            if not candidates or version in static_families:
                continue
            found = self._pick(candidates, cursors)
            if found is not None:
                pos, value = found
                picked[pos] = (value, self._subnets[pos])
            else:
                full = ", ".join(s.describe() for _, s in candidates)
                noun = "subnet" if len(candidates) == 1 else "subnets"
                raise AddressExhausted(
                    f"no free {family_name(version)} address in network "
                    f'"{self.network.name}": {noun} {full} full',
                    field="network",
                    value=self.network.name,
                )

        ordered = sorted(picked.items(), key=lambda kv: (kv[1][1].net.version, kv[0]))
        return [state.interface(value) for _, (value, state) in ordered], cursors

    def _pick(
        self, candidates: list[tuple[int, _SubnetState]], cursors: dict[str, IPAddress]
    ) -> tuple[int, int] | None:
        """The dynamic pick of one family: (subnet position, address) or None if all full.

        Round-robin inside the first subnet with room; moves that subnet's cursor in
        ``cursors``. (The cluster's block allocator overrides this with its block policy.)
        """
        for pos, state in candidates:
            cursor = cursors.get(state.key)
            start = int(cursor) + 1 if cursor is not None else state.lo
            value = state.index.next_free(start, state.lo, state.hi)
            if value is not None:
                cursors[state.key] = ipaddress.ip_address(value)
                return pos, value
        return None

    def commit(
        self,
        addresses: Iterable[IPAddress | IPInterface],
        cursors: Mapping[str, IPAddress] | None = None,
    ) -> None:
        """Mark ``addresses`` taken and move the cursors, all or nothing.

        Raises Conflict (changing nothing) if an address is outside the network, reserved or
        already taken — which means the caller did not serialise allocate and commit.
        """
        values: list[tuple[int, _SubnetState]] = []
        for value in addresses:
            addr = _as_address(value)
            state = self._owner(addr)
            if state is None:
                raise Conflict(
                    f'committing {addr} to network "{self.network.name}": {self._outside_rule()}',
                    field=FIELD,
                    value=str(addr),
                )
            if int(addr) in state.index or any(v == int(addr) for v, _ in values):
                raise Conflict(
                    f'committing {addr} to network "{self.network.name}": '
                    "address already in use or reserved",
                    field=FIELD,
                    value=str(addr),
                )
            values.append((int(addr), state))
        for v, state in values:
            state.index.add(v)
        for key, addr in (cursors or {}).items():
            if self._cursor_fits(key, addr):
                self._cursors[key] = addr

    def release(self, addresses: Iterable[IPAddress | IPInterface]) -> None:
        """Free ``addresses``; unknown, free or reserved addresses are ignored (idempotent)."""
        for value in addresses:
            addr = _as_address(value)
            state = self._owner(addr)
            if state is not None and int(addr) not in state.reserved:
                state.index.discard(int(addr))
