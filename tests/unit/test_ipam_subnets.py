"""Subnet planning: validation of requests, defaults, pools, ULA, overlap with networks/routes."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import ip_address, ip_network

import pytest
from kit import network

from netd.errors import AddressExhausted, Conflict, InvalidInput
from netd.ipam.subnets import (
    DEFAULT_POOLS,
    DefaultPool,
    parse_pool,
    plan_subnets,
    ula_from_machine_id,
)
from netd.model import IPNetwork, Network, Subnet, SubnetRequest

ULA = ipaddress.IPv6Network("fd12:3456:789a::/48")


def existing(name: str, *cidrs: str) -> Network:
    return network(name, cidrs, id=name * 8, ipv6=False)


def plan(
    *requests: SubnetRequest,
    ipv4: bool = True,
    ipv6: bool = False,
    nets: Sequence[Network] = (),
    routes: Sequence[str] = (),
    pools: Sequence[DefaultPool] = DEFAULT_POOLS,
) -> tuple[Subnet, ...]:
    host_routes: list[IPNetwork] = [ip_network(r) for r in routes]
    return plan_subnets(
        requests,
        network_name="b",
        ipv4=ipv4,
        ipv6=ipv6,
        existing=nets,
        host_routes=host_routes,
        pools=pools,
        ula=ULA,
    )


def invalid(*requests: SubnetRequest, **kw: bool) -> InvalidInput:
    with pytest.raises(InvalidInput) as exc:
        plan(*requests, **kw)  # type: ignore[arg-type]
    return exc.value


# --- requested subnets ----------------------------------------------------------------------


def test_requested_subnet_gets_first_usable_gateway() -> None:
    (s,) = plan(SubnetRequest(subnet="192.168.50.0/24"))
    assert s == Subnet(subnet=ip_network("192.168.50.0/24"), gateway=ip_address("192.168.50.1"))


def test_requested_subnet_with_everything() -> None:
    (s,) = plan(
        SubnetRequest(
            subnet="172.20.0.0/16",
            gateway="172.20.255.254",
            ip_range="172.20.5.0/24",
            aux_addresses={"router": "172.20.0.2"},
        )
    )
    assert s.gateway == ip_address("172.20.255.254")
    assert s.ip_range == ip_network("172.20.5.0/24")
    assert s.aux_addresses == {"router": ip_address("172.20.0.2")}


def test_dual_stack_request_is_ordered_v4_first() -> None:
    subnets = plan(
        SubnetRequest(subnet="fd00:1::/64"), SubnetRequest(subnet="10.1.0.0/24"), ipv6=True
    )
    assert [str(s.subnet) for s in subnets] == ["10.1.0.0/24", "fd00:1::/64"]
    assert subnets[1].gateway == ip_address("fd00:1::1")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            SubnetRequest(subnet="10.0.0.1/24"),
            "invalid subnet '10.0.0.1/24': host bits set; did you mean 10.0.0.0/24?",
        ),
        (
            SubnetRequest(subnet="10.0.0.0"),
            "invalid subnet '10.0.0.0': must be a network in CIDR notation, e.g. 10.89.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/33"),
            "invalid subnet '10.0.0.0/33': not a network in CIDR notation",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/31"),
            "invalid subnet '10.0.0.0/31': too small: an IPv4 subnet must be /30 or larger "
            "to hold a gateway and a container",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/32"),
            "invalid subnet '10.0.0.0/32': too small: an IPv4 subnet must be /30 or larger "
            "to hold a gateway and a container",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", gateway="10.0.1.1"),
            "invalid gateway '10.0.1.1': not inside subnet 10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", gateway="10.0.0.0"),
            "invalid gateway '10.0.0.0': is the network address of subnet 10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", gateway="10.0.0.255"),
            "invalid gateway '10.0.0.255': is the broadcast address of subnet 10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", gateway="gw"),
            "invalid gateway 'gw': not an IP address",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", gateway="fd00::1"),
            "invalid gateway 'fd00::1': not inside subnet 10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", ip_range="10.0.1.0/25"),
            "invalid ip_range '10.0.1.0/25': not inside subnet 10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", ip_range="10.0.0.0/23"),
            "invalid ip_range '10.0.0.0/23': not inside subnet 10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", ip_range="10.0.0.5/25"),
            "invalid ip_range '10.0.0.5/25': host bits set; did you mean 10.0.0.0/25?",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", ip_range="10.0.0.0/32"),
            "invalid ip_range '10.0.0.0/32': every address of the range is reserved "
            "(network, broadcast, gateway or aux)",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", aux_addresses={"nas": "10.0.9.9"}),
            "invalid aux_address 'nas=10.0.9.9': not inside subnet 10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", aux_addresses={"nas": "10.0.0.1"}),
            "invalid aux_address 'nas=10.0.0.1': is the gateway of subnet 10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", aux_addresses={"a": "10.0.0.9", "b": "10.0.0.9"}),
            "invalid aux_address 'b=10.0.0.9': already reserved as aux address 'a'",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", aux_addresses={"": "10.0.0.9"}),
            "invalid aux_address '=10.0.0.9': needs a non-empty name",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/30", aux_addresses={"x": "10.0.0.2"}),
            "invalid subnet '10.0.0.0/30': gateway and aux addresses leave no address "
            "for containers",
        ),
        (
            SubnetRequest(gateway="10.0.0.1"),
            "invalid gateway '10.0.0.1': needs a subnet",
        ),
        (
            SubnetRequest(ip_range="10.0.0.0/25"),
            "invalid ip_range '10.0.0.0/25': needs a subnet",
        ),
        (
            SubnetRequest(aux_addresses={"a": "10.0.0.9"}),
            "invalid aux_address 'a=10.0.0.9': needs a subnet",
        ),
    ],
)
def test_invalid_ipv4_requests(request_: SubnetRequest, message: str) -> None:
    assert str(invalid(request_)) == message


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            SubnetRequest(subnet="fd00::/127"),
            "invalid subnet 'fd00::/127': too small: an IPv6 subnet must be /126 or larger "
            "to hold a gateway and a container",
        ),
        (
            SubnetRequest(subnet="fd00::/64", gateway="fd00::"),
            "invalid gateway 'fd00::': is the subnet-router anycast address of subnet fd00::/64",
        ),
        (
            SubnetRequest(subnet="fd00::1/64"),
            "invalid subnet 'fd00::1/64': host bits set; did you mean fd00::/64?",
        ),
    ],
)
def test_invalid_ipv6_requests(request_: SubnetRequest, message: str) -> None:
    assert str(invalid(request_, ipv6=True)) == message


def test_ipv6_last_address_is_a_valid_gateway() -> None:
    (s,) = plan(SubnetRequest(subnet="fd00::/126", gateway="fd00::3"), ipv4=False, ipv6=True)
    assert s.gateway == ip_address("fd00::3")


def test_smallest_subnets_accepted() -> None:
    v4, v6 = plan(
        SubnetRequest(subnet="10.0.0.0/30"), SubnetRequest(subnet="fd00::/126"), ipv6=True
    )
    assert v4.gateway == ip_address("10.0.0.1")
    assert v6.gateway == ip_address("fd00::1")


def test_field_names_carry_the_index_when_several() -> None:
    err = invalid(
        SubnetRequest(subnet="10.0.0.0/24"),
        SubnetRequest(subnet="10.0.1.0/24", gateway="10.0.2.1"),
    )
    assert err.field == "subnets[1].gateway"
    assert str(err) == "invalid subnets[1].gateway '10.0.2.1': not inside subnet 10.0.1.0/24"


def test_requested_subnets_must_not_overlap_each_other() -> None:
    err = invalid(SubnetRequest(subnet="10.0.0.0/16"), SubnetRequest(subnet="10.0.3.0/24"))
    assert str(err) == (
        "invalid subnets[1].subnet '10.0.3.0/24': overlaps subnets[0].subnet 10.0.0.0/16"
    )


def test_ipv4_subnet_with_ipv4_disabled() -> None:
    err = invalid(SubnetRequest(subnet="10.0.0.0/24"), ipv4=False, ipv6=True)
    assert str(err) == "invalid subnet '10.0.0.0/24': IPv4 is disabled for this network"


def test_ipv6_subnet_without_ipv6() -> None:
    err = invalid(SubnetRequest(subnet="fd00::/64"))
    assert str(err) == "invalid subnet 'fd00::/64': an IPv6 subnet needs IPv6 enabled (ipv6: true)"


def test_no_family_at_all() -> None:
    err = invalid(ipv4=False, ipv6=False)
    assert err.field == "ipv4"


# --- overlap with existing networks ---------------------------------------------------------


def test_overlap_with_existing_network_names_both() -> None:
    with pytest.raises(Conflict) as exc:
        plan(SubnetRequest(subnet="10.89.0.0/24"), nets=[existing("a", "10.89.0.0/16")])
    assert str(exc.value) == (
        'subnet 10.89.0.0/24 of network "b" overlaps 10.89.0.0/16 of network "a"'
    )
    assert exc.value.code == "conflict"


def test_overlap_v6_with_existing() -> None:
    with pytest.raises(Conflict, match=r'fd00::/48 of network "b" overlaps fd00:0:0:1::/64'):
        plan(
            SubnetRequest(subnet="fd00::/48"),
            ipv6=True,
            nets=[existing("a", "10.0.0.0/24", "fd00:0:0:1::/64")],
        )


def test_requested_subnet_may_cover_a_host_route() -> None:
    # The user asked for it explicitly; only pool picks avoid host routes (as Docker does).
    (s,) = plan(SubnetRequest(subnet="10.89.0.0/24"), routes=["10.89.0.0/24"])
    assert str(s.subnet) == "10.89.0.0/24"


# --- default pools --------------------------------------------------------------------------


def test_default_pool_first_free_24() -> None:
    (s,) = plan()
    assert s == Subnet(subnet=ip_network("10.89.0.0/24"), gateway=ip_address("10.89.0.1"))


def test_pool_skips_existing_networks_and_host_routes() -> None:
    nets = [existing("a", "10.89.0.0/24"), existing("c", "10.89.2.0/23", "fd00::/64")]
    routes = ["0.0.0.0/0", "10.89.1.128/25", "10.89.4.7/32", "::/0"]
    (s,) = plan(nets=nets, routes=routes)
    assert str(s.subnet) == "10.89.5.0/24"


def test_default_route_does_not_block_the_pool() -> None:
    (s,) = plan(routes=["0.0.0.0/0"])
    assert str(s.subnet) == "10.89.0.0/24"


def test_route_covering_whole_pool_falls_to_next_pool() -> None:
    pools = [parse_pool("10.89.0.0/16:24"), parse_pool("172.30.0.0/16:20")]
    (s,) = plan(routes=["10.0.0.0/8"], pools=pools, nets=[existing("a", "172.30.0.0/24")])
    assert str(s.subnet) == "172.30.16.0/20"


def test_pool_exhausted() -> None:
    pools = [parse_pool("10.89.0.0/23:24")]
    with pytest.raises(AddressExhausted) as exc:
        plan(nets=[existing("a", "10.89.0.0/24"), existing("c", "10.89.1.0/24")], pools=pools)
    assert str(exc.value) == (
        'creating network "b": no free IPv4 subnet left in default address pools '
        "10.89.0.0/23:24 (all overlap existing networks or host routes)"
    )


def test_pool_skips_many_networks_quickly() -> None:
    nets = [existing(f"n{i}", f"10.89.{i}.0/24") for i in range(255)]
    (s,) = plan(nets=nets)
    assert str(s.subnet) == "10.89.255.0/24"


def test_ipv6_from_ula_first_free_64() -> None:
    v4, v6 = plan(ipv6=True, nets=[existing("a", "fd12:3456:789a::/64")])
    assert str(v4.subnet) == "10.89.0.0/24"
    assert v6 == Subnet(
        subnet=ip_network("fd12:3456:789a:1::/64"), gateway=ip_address("fd12:3456:789a:1::1")
    )


def test_ipv6_only_network_from_ula() -> None:
    (v6,) = plan(ipv4=False, ipv6=True)
    assert str(v6.subnet) == "fd12:3456:789a::/64"


def test_ipv6_pool_configured_wins_over_ula() -> None:
    pools = [*DEFAULT_POOLS, parse_pool("fd99::/56:64")]
    (_, v6) = plan(ipv6=True, pools=pools)
    assert str(v6.subnet) == "fd99::/64"


def test_requested_v4_and_pool_v6() -> None:
    v4, v6 = plan(SubnetRequest(subnet="10.5.0.0/24"), ipv6=True)
    assert (str(v4.subnet), str(v6.subnet)) == ("10.5.0.0/24", "fd12:3456:789a::/64")


# --- pools and ULA --------------------------------------------------------------------------


def test_parse_pool() -> None:
    assert parse_pool("10.89.0.0/16:24") == DefaultPool(ip_network("10.89.0.0/16"), 24)
    assert parse_pool(" fd00:1::/48:64 ") == DefaultPool(ip_network("fd00:1::/48"), 64)
    assert str(parse_pool("10.0.0.0/8:24")) == "10.0.0.0/8:24"


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("10.89.0.0/16", "must look like BASE/PREFIX:SIZE, e.g. 10.89.0.0/16:24"),
        ("10.89.0.0:24", "must look like BASE/PREFIX:SIZE, e.g. 10.89.0.0/16:24"),
        ("10.89.0.0/16:x", "must look like BASE/PREFIX:SIZE, e.g. 10.89.0.0/16:24"),
        ("10.89.0.1/16:24", "bad base network: 10.89.0.1/16 has host bits set"),
        ("10.89.0.0/16:8", "size must be between /16 (the base) and /30"),
        ("10.89.0.0/16:31", "size must be between /16 (the base) and /30"),
        ("fd00::/48:127", "size must be between /48 (the base) and /126"),
    ],
)
def test_parse_pool_errors(text: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_pool(text)
    assert exc.value.field == "default_address_pools"
    assert exc.value.rule == rule


def test_ula_from_machine_id_is_stable_rfc4193() -> None:
    a = ula_from_machine_id("0123456789abcdef0123456789abcdef\n")
    assert a == ula_from_machine_id("0123456789abcdef0123456789abcdef")
    assert a.prefixlen == 48
    assert a.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert a != ula_from_machine_id("fedcba9876543210fedcba9876543210")


def test_ula_needs_content() -> None:
    with pytest.raises(InvalidInput) as exc:
        ula_from_machine_id("  \n")
    assert exc.value.field == "machine_id"
