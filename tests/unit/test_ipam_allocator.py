"""NetworkAllocator: dynamic and static allocation, reservations, round-robin, exhaustion."""

from __future__ import annotations

import ipaddress
from ipaddress import ip_address, ip_interface, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import network, subnet

from netd.errors import AddressExhausted, Conflict, InvalidInput
from netd.ipam.allocator import NetworkAllocator
from netd.model import IPAddress, Network, Subnet

sub = subnet  # (cidr, gateway="auto" | None | address, ip_range, aux)


def net(*subnets: Subnet, name: str = "web") -> Network:
    return network(name, subnets, id="0" * 64, ipv6=False)


def take(alloc: NetworkAllocator, static: tuple[str, ...] = ()) -> list[str]:
    addrs, cursors = alloc.allocate(static)
    alloc.commit(addrs, cursors)
    return [str(a) for a in addrs]


# --- dynamic allocation ---------------------------------------------------------------------


def test_first_address_skips_network_and_gateway() -> None:
    alloc = NetworkAllocator(net(sub("10.89.0.0/24")))
    assert take(alloc) == ["10.89.0.2/24"]
    assert take(alloc) == ["10.89.0.3/24"]


def test_allocate_does_not_commit() -> None:
    alloc = NetworkAllocator(net(sub("10.89.0.0/24")))
    first, cursors = alloc.allocate()
    again, _ = alloc.allocate()
    assert first == again, "allocate alone changes nothing"
    assert not alloc.taken(first[0])
    assert alloc.cursors == {}
    alloc.commit(first, cursors)
    assert alloc.taken(first[0])
    assert alloc.cursors == {"10.89.0.0/24": ip_address("10.89.0.2")}


def test_dual_stack_one_address_per_family_v4_first() -> None:
    alloc = NetworkAllocator(net(sub("fd00:1::/64"), sub("10.89.0.0/24")))
    assert take(alloc) == ["10.89.0.2/24", "fd00:1::2/64"]


def test_ipv6_only_network() -> None:
    alloc = NetworkAllocator(net(sub("fd00:1::/64")))
    assert take(alloc) == ["fd00:1::2/64"]


def test_ipv6_skips_subnet_router_anycast_without_gateway() -> None:
    alloc = NetworkAllocator(net(sub("fd00:1::/126", gateway=None)))
    assert take(alloc) == ["fd00:1::1/126"]
    assert take(alloc) == ["fd00:1::2/126"]
    assert take(alloc) == ["fd00:1::3/126"], "the last IPv6 address is not a broadcast"
    with pytest.raises(AddressExhausted):
        alloc.allocate()


def test_ipv4_broadcast_never_handed_out() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/29")))  # .0 net, .1 gw, .7 broadcast
    got = [take(alloc)[0] for _ in range(5)]
    assert got == [f"10.0.0.{i}/29" for i in range(2, 7)]
    with pytest.raises(AddressExhausted) as exc:
        alloc.allocate()
    assert str(exc.value) == 'no free IPv4 address in network "web": subnet 10.0.0.0/29 full'


def test_ipv4_slash31_and_slash32_have_no_network_or_broadcast() -> None:
    # plan_subnets rejects these; an allocator given one anyway follows RFC 3021.
    alloc = NetworkAllocator(net(sub("10.0.0.0/31", gateway="10.0.0.0")))
    assert take(alloc) == ["10.0.0.1/31"]
    alloc32 = NetworkAllocator(net(sub("10.0.0.9/32", gateway=None)))
    assert take(alloc32) == ["10.0.0.9/32"]


def test_gateway_in_the_middle_and_aux_addresses_skipped() -> None:
    alloc = NetworkAllocator(
        net(sub("10.0.0.0/29", gateway="10.0.0.3", aux={"router": "10.0.0.1", "nas": "10.0.0.5"}))
    )
    got = [take(alloc)[0] for _ in range(3)]
    assert got == ["10.0.0.2/29", "10.0.0.4/29", "10.0.0.6/29"]
    with pytest.raises(AddressExhausted):
        alloc.allocate()


def test_ip_range_bounds_dynamic_allocation() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24", ip_range="10.0.0.128/30")))
    got = [take(alloc)[0] for _ in range(4)]
    assert got == ["10.0.0.128/24", "10.0.0.129/24", "10.0.0.130/24", "10.0.0.131/24"]
    with pytest.raises(AddressExhausted) as exc:
        alloc.allocate()
    assert "subnet 10.0.0.0/24 (ip_range 10.0.0.128/30) full" in str(exc.value)


def test_ip_range_at_subnet_start_skips_network_and_gateway() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24", ip_range="10.0.0.0/30")))
    assert take(alloc) == ["10.0.0.2/24"]
    assert take(alloc) == ["10.0.0.3/24"]
    with pytest.raises(AddressExhausted):
        alloc.allocate()


def test_static_outside_ip_range_but_inside_subnet_is_allowed() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24", ip_range="10.0.0.128/25")))
    assert take(alloc, ("10.0.0.7",)) == ["10.0.0.7/24"]


def test_second_subnet_used_when_first_is_full() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/30"), sub("10.0.1.0/30")))
    assert take(alloc) == ["10.0.0.2/30"]
    assert take(alloc) == ["10.0.1.2/30"]
    with pytest.raises(AddressExhausted) as exc:
        alloc.allocate()
    assert str(exc.value) == (
        'no free IPv4 address in network "web": subnets 10.0.0.0/30, 10.0.1.0/30 full'
    )
    assert exc.value.code == "address_exhausted"


def test_v6_exhaustion_names_the_family() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24"), sub("fd00::/126")))
    take(alloc)
    take(alloc)
    with pytest.raises(AddressExhausted, match=r"no free IPv6 address .* fd00::/126 full"):
        alloc.allocate()


# --- round-robin ----------------------------------------------------------------------------


def test_released_address_is_not_reused_at_once() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")))
    a = take(alloc)
    b = take(alloc)
    alloc.release([ip_interface(a[0])])
    assert take(alloc) == ["10.0.0.4/24"], "continues after the cursor"
    assert b == ["10.0.0.3/24"]


def test_wrap_around_reuses_released_addresses_in_order() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/29")))  # .2-.6 usable
    for _ in range(5):
        take(alloc)
    alloc.release([ip_address("10.0.0.5"), ip_address("10.0.0.3")])
    assert take(alloc) == ["10.0.0.3/29"], "wraps to the start after .6"
    assert take(alloc) == ["10.0.0.5/29"]
    with pytest.raises(AddressExhausted):
        alloc.allocate()


def test_cursor_restored_from_store_continues_there() -> None:
    taken = [ip_address("10.0.0.2"), ip_address("10.0.0.3")]
    alloc = NetworkAllocator(
        net(sub("10.0.0.0/24")), taken, {"10.0.0.0/24": ip_address("10.0.0.200")}
    )
    assert take(alloc) == ["10.0.0.201/24"]


def test_cursor_at_end_of_range_wraps() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/29")), (), {"10.0.0.0/29": ip_address("10.0.0.6")})
    assert take(alloc) == ["10.0.0.2/29"]


def test_stale_cursors_are_dropped() -> None:
    alloc = NetworkAllocator(
        net(sub("10.0.0.0/24")),
        (),
        {"10.9.0.0/24": ip_address("10.9.0.9"), "10.0.0.0/24": ip_address("192.168.0.1")},
    )
    assert alloc.cursors == {}
    assert take(alloc) == ["10.0.0.2/24"]


def test_static_does_not_move_cursor() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")))
    take(alloc)
    take(alloc, ("10.0.0.100",))
    assert take(alloc) == ["10.0.0.3/24"]


def test_rebuild_from_taken_skips_them() -> None:
    taken = [ip_interface("10.0.0.2/24"), ip_address("10.0.0.3")]
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")), taken)
    assert alloc.taken(ip_address("10.0.0.2"))
    assert take(alloc) == ["10.0.0.4/24"]


def test_rebuild_with_address_outside_subnets_is_rejected() -> None:
    with pytest.raises(InvalidInput) as exc:
        NetworkAllocator(net(sub("10.0.0.0/24")), [ip_address("10.1.0.5")])
    assert str(exc.value) == (
        "invalid taken '10.1.0.5': not inside any subnet of network \"web\" (10.0.0.0/24)"
    )


# --- static requests ------------------------------------------------------------------------


def test_static_replaces_dynamic_for_its_family_only() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24"), sub("fd00::/64")))
    assert take(alloc, ("10.0.0.50",)) == ["10.0.0.50/24", "fd00::2/64"]
    assert take(alloc, ("fd00::99",)) == ["10.0.0.2/24", "fd00::99/64"]


def test_static_cidr_with_matching_prefix_accepted() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")))
    assert take(alloc, ("10.0.0.9/24",)) == ["10.0.0.9/24"]


def test_two_static_in_different_subnets_of_one_family() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24"), sub("10.0.1.0/24")))
    assert take(alloc, ("10.0.1.5", "10.0.0.5")) == ["10.0.0.5/24", "10.0.1.5/24"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.0", "invalid ips '10.0.0.0': is the network address of subnet 10.0.0.0/24"),
        ("10.0.0.255", "invalid ips '10.0.0.255': is the broadcast address of subnet 10.0.0.0/24"),
        ("10.0.0.1", "invalid ips '10.0.0.1': is the gateway of subnet 10.0.0.0/24"),
        (
            "10.0.0.10",
            "invalid ips '10.0.0.10': is reserved as aux address 'printer' of subnet 10.0.0.0/24",
        ),
        (
            "fd00::",
            "invalid ips 'fd00::': is the subnet-router anycast address of subnet fd00::/64",
        ),
        (
            "10.1.0.5",
            "invalid ips '10.1.0.5': not inside any subnet of network \"web\" "
            "(10.0.0.0/24, fd00::/64)",
        ),
        ("banana", "invalid ips 'banana': not an IP address"),
        ("10.0.0.300", "invalid ips '10.0.0.300': not an IP address"),
        ("", "invalid ips '': must be an IP address such as 10.89.0.5"),
        (
            "10.0.0.5/16",
            "invalid ips '10.0.0.5/16': prefix length /16 does not match subnet 10.0.0.0/24",
        ),
    ],
)
def test_static_errors(value: str, message: str) -> None:
    alloc = NetworkAllocator(
        net(sub("10.0.0.0/24", aux={"printer": "10.0.0.10"}), sub("fd00::/64"))
    )
    with pytest.raises(InvalidInput) as exc:
        alloc.allocate((value,))
    assert str(exc.value) == message
    assert exc.value.field == "ips"


def test_two_static_in_one_subnet_rejected() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")))
    with pytest.raises(InvalidInput) as exc:
        alloc.allocate(("10.0.0.5", "10.0.0.6"))
    assert str(exc.value) == (
        "invalid ips '10.0.0.6': 10.0.0.5 is also requested in subnet 10.0.0.0/24; "
        "at most one address per subnet"
    )


def test_static_taken_is_a_conflict() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")))
    take(alloc, ("10.0.0.5",))
    with pytest.raises(Conflict) as exc:
        alloc.allocate(("10.0.0.5",))
    assert not isinstance(exc.value, AddressExhausted)
    assert str(exc.value) == 'allocating 10.0.0.5 in network "web": address already in use'
    assert exc.value.field == "ips"


def test_static_in_full_subnet_of_other_family_still_fails_dynamic() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/30"), sub("fd00::/64")))
    take(alloc)
    with pytest.raises(AddressExhausted, match="IPv4"):
        alloc.allocate(("fd00::5",))


# --- commit / release / utilisation ---------------------------------------------------------


def test_commit_conflict_changes_nothing() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")))
    addrs, cursors = alloc.allocate()
    alloc.commit(addrs, cursors)
    with pytest.raises(Conflict, match=r"committing 10\.0\.0\.2 to network \"web\""):
        alloc.commit([ip_address("10.0.0.9"), addrs[0]], {})
    assert not alloc.taken(ip_address("10.0.0.9")), "all or nothing"


def test_commit_of_reserved_or_foreign_address_is_a_conflict() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")))
    with pytest.raises(Conflict, match="already in use or reserved"):
        alloc.commit([ip_address("10.0.0.1")])
    with pytest.raises(Conflict, match="not inside any subnet"):
        alloc.commit([ip_address("172.16.0.1")])


def test_release_is_idempotent_and_keeps_reservations() -> None:
    alloc = NetworkAllocator(net(sub("10.0.0.0/24")))
    addrs = take(alloc)
    alloc.release([ip_interface(addrs[0])])
    alloc.release([ip_interface(addrs[0]), ip_address("172.16.0.1"), ip_address("10.0.0.1")])
    assert alloc.reserved(ip_address("10.0.0.1")), "the gateway cannot be released"
    assert not alloc.taken(ip_address("10.0.0.1"))
    assert alloc.utilisation() == {"10.0.0.0/24": (0, 253)}


def test_utilisation_counts_endpoints_against_assignable_size() -> None:
    alloc = NetworkAllocator(
        net(sub("10.0.0.0/24", aux={"a": "10.0.0.9"}, ip_range="10.0.0.0/25"), sub("fd00::/64"))
    )
    take(alloc)
    take(alloc, ("10.0.0.200",))
    assert alloc.utilisation() == {
        "10.0.0.0/24": (2, 256 - 4),
        "fd00::/64": (2, 2**64 - 2),
    }


# --- property: random sequences against a plain set model -----------------------------------


def _reserved_model() -> set[IPAddress]:
    reserved: set[IPAddress] = {
        ip_address(a) for a in ("10.0.0.0", "10.0.0.1", "10.0.0.15", "10.0.0.7", "10.0.1.0")
    }
    reserved |= {ip_address("10.0.1.3"), ip_address("10.0.1.7"), ip_address("10.0.1.4")}
    reserved |= {ip_address("fd00::"), ip_address("fd00::1")}
    return reserved


PROPERTY_NET = net(
    sub("10.0.0.0/28", ip_range="10.0.0.0/29", aux={"x": "10.0.0.7"}),
    sub("10.0.1.0/29", gateway="10.0.1.3", aux={"y": "10.0.1.4"}),
    sub("fd00::/124"),
)
DYN4 = {ip_address("10.0.0.0") + i for i in range(8)} | {
    ip_address("10.0.1.0") + i for i in range(8)
}
DYN6 = {ipaddress.IPv6Address("fd00::") + i for i in range(16)}
# Dynamic ranges of PROPERTY_NET per subnet, in order, for the round-robin model.
RANGES: dict[str, list[IPAddress]] = {
    "10.0.0.0/28": [ip_address("10.0.0.0") + i for i in range(8)],
    "10.0.1.0/29": [ip_address("10.0.1.0") + i for i in range(8)],
    "fd00::/124": sorted(DYN6),
}


def _model_pick(
    version: int, held: set[IPAddress], reserved: set[IPAddress], cursors: dict[str, IPAddress]
) -> tuple[str, IPAddress] | None:
    """What round-robin must hand out: first free after the subnet's cursor, wrapping."""
    for key, addrs in RANGES.items():
        if addrs[0].version != version:
            continue
        cursor = cursors.get(key)
        start = addrs.index(cursor) + 1 if cursor is not None else 0
        for a in addrs[start:] + addrs[:start]:
            if a not in held and a not in reserved:
                return key, a
    return None


op = st.one_of(
    st.just(("alloc", 0)),
    st.tuples(st.just("static"), st.integers(0, 23)),
    st.tuples(st.just("release"), st.integers(0, 100)),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(op, max_size=60))
def test_random_sequences_never_hand_out_taken_or_reserved(ops: list[tuple[str, int]]) -> None:
    alloc = NetworkAllocator(PROPERTY_NET)
    reserved = _reserved_model()
    every = [ip_address("10.0.0.0") + i for i in range(16)]
    every += [ip_address("10.0.1.0") + i for i in range(8)]
    held: list[IPAddress] = []
    cursors_model: dict[str, IPAddress] = {}
    for kind, arg in ops:
        if kind == "release":
            if held:
                victim = held.pop(arg % len(held))
                alloc.release([victim])
            continue
        static = (str(every[arg]),) if kind == "static" else ()
        full4 = DYN4 - reserved <= set(held)
        full6 = DYN6 - reserved <= set(held)
        try:
            addrs, cursors = alloc.allocate(static)
        except AddressExhausted:
            assert full6 or (full4 and not static), "exhausted only when a needed family is full"
            continue
        except InvalidInput:
            assert every[arg] in reserved
            continue
        except Conflict:
            assert every[arg] in held
            continue
        assert not (full6 or (full4 and not static))
        expected = [_model_pick(6, set(held), reserved, cursors_model)]
        if not static:
            expected.insert(0, _model_pick(4, set(held), reserved, cursors_model))
        for pick in expected:
            assert pick is not None
            cursors_model[pick[0]] = pick[1]
        assert {a.ip for a in addrs} >= {pick[1] for pick in expected if pick}, "round-robin"
        assert cursors == cursors_model
        got = [a.ip for a in addrs]
        assert len({a.version for a in got}) == 2, "one per family"
        for a in got:
            assert a not in held and a not in reserved
        alloc.commit(addrs, cursors)
        held.extend(got)
        for a in got:
            if a.version == 4 and not static and a in ip_network("10.0.0.0/28"):
                assert a in ip_network("10.0.0.0/29"), "dynamic stays in ip_range"
    for a in every + [ipaddress.IPv6Address("fd00::") + i for i in range(8)]:
        assert alloc.taken(a) == (a in held)
    used = sum(u for u, _ in alloc.utilisation().values())
    assert used == len(held)
