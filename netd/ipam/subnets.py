"""Network creation planning: validate requested subnets, fill defaults, pick free subnets.

:func:`plan_subnets` turns a user's :class:`~netd.model.SubnetRequest` list into validated
:class:`~netd.model.Subnet` records: strict CIDR parsing, gateway/ip_range/aux addresses inside
their subnet, no overlaps among the request or with existing networks, a default gateway (the
first usable address), and a subnet from the default address pools (IPv4) or the host's ULA /48
(IPv6) when none of a family is given, skipping subnets used by other networks or by host
routes. The rules are listed in docs/ipam.md.

Pure logic: the caller reads /etc/machine-id, the routing table and the store and passes the
data in; nothing here does I/O or allocates endpoint addresses (see :mod:`.allocator`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import AddressExhausted, Conflict, InvalidInput
from ..model import IPAddress, IPNetwork, Network, Subnet, SubnetRequest
from .allocator import family_name, reserved_addresses

IPv6Network = ipaddress.IPv6Network

POOLS_FIELD = "default_address_pools"
# Smallest subnets that hold a gateway and one container: an IPv4 /30 (network, gateway,
# container, broadcast) and an IPv6 /126 (subnet-router anycast, gateway, two containers;
# a /127 would only hold the anycast address and the gateway). Like Docker we do not do
# RFC 3021 /31 point-to-point networks.
MAX_PREFIX = {4: 30, 6: 126}
ULA_PREFIX = ipaddress.IPv6Network("fd00::/8")  # RFC 4193 §3.1, L bit set


@dataclass(frozen=True)
class DefaultPool:
    """A block networks get subnets from when they ask for none: ``base`` cut into /``size``."""

    base: IPNetwork
    size: int

    def __post_init__(self) -> None:
        if not self.base.prefixlen <= self.size <= MAX_PREFIX[self.base.version]:
            raise InvalidInput(
                POOLS_FIELD,
                f"{self.base}:{self.size}",
                f"size must be between /{self.base.prefixlen} (the base) and "
                f"/{MAX_PREFIX[self.base.version]}",
            )

    def __str__(self) -> str:
        return f"{self.base}:{self.size}"


DEFAULT_POOLS: tuple[DefaultPool, ...] = (DefaultPool(ipaddress.ip_network("10.89.0.0/16"), 24),)


def parse_pool(text: str) -> DefaultPool:
    """Parse ``BASE/PREFIX:SIZE`` (``10.89.0.0/16:24``, ``fd00:1::/48:64``) into a DefaultPool."""
    if not isinstance(text, str):
        raise InvalidInput(POOLS_FIELD, text, "must be a string like 10.89.0.0/16:24")
    base_text, sep, size_text = text.strip().rpartition(":")
    if not sep or "/" not in base_text or not size_text.isdigit():
        raise InvalidInput(
            POOLS_FIELD, text, "must look like BASE/PREFIX:SIZE, e.g. 10.89.0.0/16:24"
        )
    try:
        base = ipaddress.ip_network(base_text, strict=True)
    except ValueError as exc:
        raise InvalidInput(POOLS_FIELD, text, f"bad base network: {exc}") from exc
    return DefaultPool(base, int(size_text))


def ula_from_machine_id(machine_id: str) -> IPv6Network:
    """An RFC 4193 ``fdXX:XXXX:XXXX::/48`` derived from the content of /etc/machine-id.

    RFC 4193 §3.2.2 wants a 40-bit pseudo-random Global ID; a hash of the machine id gives one
    that is stable across restarts and different between hosts, so two netd hosts do not pick
    the same IPv6 subnets.
    """
    if not isinstance(machine_id, str) or not machine_id.strip():
        raise InvalidInput(
            "machine_id", machine_id, "must be the non-empty content of /etc/machine-id"
        )
    digest = hashlib.sha256(b"netd-ula\0" + machine_id.strip().encode()).digest()
    global_id = int.from_bytes(digest[:5], "big")
    return ipaddress.IPv6Network((int(ULA_PREFIX.network_address) | global_id << 80, 48))


# --- validation of one request --------------------------------------------------------------


def _field(index: int, count: int, name: str) -> str:
    return f"subnets[{index}].{name}" if count > 1 else name


def _parse_cidr(field: str, text: object) -> IPNetwork:
    if not isinstance(text, str) or "/" not in text:
        raise InvalidInput(field, text, "must be a network in CIDR notation, e.g. 10.89.0.0/24")
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise InvalidInput(field, text, "not a network in CIDR notation") from exc
    if int(net.network_address) != int(ipaddress.ip_interface(text.strip()).ip):
        raise InvalidInput(field, text, f"host bits set; did you mean {net}?")
    return net


def _parse_address(field: str, text: object) -> IPAddress:
    if not isinstance(text, str):
        raise InvalidInput(field, text, "must be an IP address")
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise InvalidInput(field, text, "not an IP address") from exc


def _check_inside(field: str, text: str, addr: IPAddress, net: IPNetwork) -> None:
    if addr.version != net.version or addr not in net:
        raise InvalidInput(field, text, f"not inside subnet {net}")
    if int(addr) == int(net.network_address):
        what = "network address" if net.version == 4 else "subnet-router anycast address"
        raise InvalidInput(field, text, f"is the {what} of subnet {net}")
    if net.version == 4 and addr == net.broadcast_address:
        raise InvalidInput(field, text, f"is the broadcast address of subnet {net}")


def _build_subnet(req: SubnetRequest, index: int, count: int, net: IPNetwork) -> Subnet:
    """Validate gateway, ip_range and aux addresses of one request whose subnet is ``net``."""
    sub_field = _field(index, count, "subnet")
    if net.prefixlen > MAX_PREFIX[net.version]:
        raise InvalidInput(
            sub_field,
            req.subnet,
            f"too small: an {family_name(net.version)} subnet must be /"
            f"{MAX_PREFIX[net.version]} or larger to hold a gateway and a container",
        )
    gw_field = _field(index, count, "gateway")
    if req.gateway is not None:
        gateway = _parse_address(gw_field, req.gateway)
        _check_inside(gw_field, req.gateway, gateway, net)
    else:
        gateway = net.network_address + 1

    ip_range: IPNetwork | None = None
    if req.ip_range is not None:
        range_field = _field(index, count, "ip_range")
        ip_range = _parse_cidr(range_field, req.ip_range)
        if ip_range.version != net.version or not (
            int(net.network_address) <= int(ip_range.network_address)
            and int(ip_range.broadcast_address) <= int(net.broadcast_address)
        ):
            raise InvalidInput(range_field, req.ip_range, f"not inside subnet {net}")

    aux_field = _field(index, count, "aux_address")
    aux: dict[str, IPAddress] = {}
    seen: dict[IPAddress, str] = {}
    for name, text in req.aux_addresses.items():
        shown = f"{name}={text}"
        if not isinstance(name, str) or not name:
            raise InvalidInput(aux_field, shown, "needs a non-empty name")
        addr = _parse_address(aux_field, text)
        _check_inside(aux_field, shown, addr, net)
        if addr == gateway:
            raise InvalidInput(aux_field, shown, f"is the gateway of subnet {net}")
        if addr in seen:
            raise InvalidInput(aux_field, shown, f"already reserved as aux address {seen[addr]!r}")
        seen[addr] = name
        aux[name] = addr

    subnet = Subnet(subnet=net, gateway=gateway, ip_range=ip_range, aux_addresses=aux)
    reserved = reserved_addresses(subnet)
    if net.num_addresses - len(reserved) < 1:
        raise InvalidInput(
            sub_field, req.subnet, "gateway and aux addresses leave no address for containers"
        )
    if ip_range is not None:
        lo, hi = int(ip_range.network_address), int(ip_range.broadcast_address)
        if ip_range.num_addresses - sum(1 for v in reserved if lo <= v <= hi) < 1:
            raise InvalidInput(
                _field(index, count, "ip_range"),
                req.ip_range,
                "every address of the range is reserved (network, broadcast, gateway or aux)",
            )
    return subnet


# --- choosing free subnets ------------------------------------------------------------------


def _first_free_block(pool: DefaultPool, blockers: Sequence[IPNetwork]) -> IPNetwork | None:
    """The first /size block of ``pool.base`` overlapping none of ``blockers``."""
    base = pool.base
    step = 1 << (base.max_prefixlen - pool.size)
    lo, hi = int(base.network_address), int(base.broadcast_address)
    spans = sorted(
        (int(b.network_address), int(b.broadcast_address))
        for b in blockers
        if b.version == base.version and b.overlaps(base)
    )
    cand = lo
    for start, end in spans:
        if cand + step - 1 < start:
            break
        if end >= cand:
            # Jump to the first block boundary after this blocker.
            cand = lo + -(-(end + 1 - lo) // step) * step
            if cand > hi:
                return None
    if cand + step - 1 > hi:
        return None
    return ipaddress.ip_network((cand, pool.size))


def _pick_from_pools(
    version: int, pools: Sequence[DefaultPool], blockers: Sequence[IPNetwork], network_name: str
) -> Subnet:
    usable = [p for p in pools if p.base.version == version]
    for pool in usable:
        block = _first_free_block(pool, blockers)
        if block is not None:
            return Subnet(subnet=block, gateway=block.network_address + 1)
    shown = ", ".join(str(p) for p in usable) or "none configured"
    raise AddressExhausted(
        f'creating network "{network_name}": no free {family_name(version)} subnet left in '
        f"default address pools {shown} (all overlap existing networks or host routes)",
        field=POOLS_FIELD,
        value=shown,
    )


def _check_existing(subnet: IPNetwork, network_name: str, existing: Sequence[Network]) -> None:
    for other in existing:
        for theirs in other.subnets:
            if subnet.version == theirs.subnet.version and subnet.overlaps(theirs.subnet):
                raise Conflict(
                    f'subnet {subnet} of network "{network_name}" overlaps {theirs.subnet} '
                    f'of network "{other.name}"',
                    field="subnet",
                    value=str(subnet),
                )


def plan_subnets(
    requests: Sequence[SubnetRequest],
    *,
    network_name: str,
    ipv4: bool,
    ipv6: bool,
    existing: Sequence[Network],
    host_routes: Sequence[IPNetwork],
    pools: Sequence[DefaultPool],
    ula: IPv6Network,
) -> tuple[Subnet, ...]:
    """Validate ``requests`` and return the new network's subnets, IPv4 first.

    A family enabled but not requested gets one subnet: IPv4 from ``pools``, IPv6 from the
    ``pools`` entries of that family or else a /64 of ``ula``, skipping any overlapping an
    ``existing`` network's subnet or a ``host_routes`` entry (default routes aside). Raises
    InvalidInput naming the field (``subnets[i].gateway`` when there are several requests),
    Conflict when a requested subnet overlaps another network's, AddressExhausted when the
    pools have no free subnet left.
    """
    if not ipv4 and not ipv6:
        raise InvalidInput("ipv4", False, "a network needs IPv4 or IPv6 enabled (or both)")
    given = [(i, r) for i, r in enumerate(requests) if r.subnet is not None]
    for i, r in enumerate(requests):
        if r.subnet is None:
            for name, value in (("gateway", r.gateway), ("ip_range", r.ip_range)):
                if value is not None:
                    raise InvalidInput(_field(i, len(requests), name), value, "needs a subnet")
            if r.aux_addresses:
                raise InvalidInput(
                    _field(i, len(requests), "aux_address"),
                    ", ".join(f"{k}={v}" for k, v in r.aux_addresses.items()),
                    "needs a subnet",
                )

    planned: list[tuple[int, str, Subnet]] = []
    for i, req in given:
        field = _field(i, len(requests), "subnet")
        net = _parse_cidr(field, req.subnet)
        if net.version == 4 and not ipv4:
            raise InvalidInput(field, req.subnet, "IPv4 is disabled for this network")
        if net.version == 6 and not ipv6:
            raise InvalidInput(field, req.subnet, "an IPv6 subnet needs IPv6 enabled (ipv6: true)")
        for _, other_field, other in planned:
            if net.version == other.version and net.overlaps(other.subnet):
                raise InvalidInput(field, req.subnet, f"overlaps {other_field} {other.subnet}")
        planned.append((i, field, _build_subnet(req, i, len(requests), net)))

    for _, _, sub in planned:
        _check_existing(sub.subnet, network_name, existing)

    blockers: list[IPNetwork] = [s.subnet for n in existing for s in n.subnets]
    blockers += [r for r in host_routes if r.prefixlen > 0]
    result = [sub for _, _, sub in planned]
    versions = {s.version for s in result}
    if ipv4 and 4 not in versions:
        result.append(_pick_from_pools(4, pools, blockers, network_name))
    if ipv6 and 6 not in versions:
        v6_pools = [p for p in pools if p.base.version == 6] or [DefaultPool(ula, 64)]
        result.append(_pick_from_pools(6, v6_pools, blockers, network_name))
    return tuple(sorted(result, key=lambda s: s.version))
