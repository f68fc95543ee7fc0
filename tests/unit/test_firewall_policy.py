"""Network options, published-port expansion and host-port conflicts (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from kit import records as kit

from netd.errors import Conflict, InvalidInput
from netd.firewall.policy import build_policy, endpoint_ports
from netd.firewall.state import DesiredState
from netd.model import Endpoint, Network, PortMapping

V4 = kit.subnet("10.1.0.0/24")
V6 = kit.subnet("fd00::/64")


def network(nid: str = "a" * 64, **kw: Any) -> Network:
    subnets = kw.pop("subnets", (V4, V6))
    return kit.network("n", subnets, id=nid, ipv6=kw.pop("ipv6", False), **kw)


def endpoint(cid: str, *ports: PortMapping, nid: str = "a" * 64, v6: bool = True) -> Endpoint:
    addrs = ["10.1.0.2/24", "fd00::2/64"] if v6 else ["10.1.0.2/24"]
    return kit.endpoint(
        network(nid), cid, ip=addrs, netns="/x", host_ifname="nvx", port_mappings=ports
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"enable_icc": "maybe"},
            'invalid options.enable_icc \'maybe\': must be "true" or "false"',
        ),
        (
            {"enable_ip_masquerade": ""},
            'invalid options.enable_ip_masquerade \'\': must be "true" or "false"',
        ),
        ({"host_ipv4": "fd00::9"}, "invalid options.host_ipv4 'fd00::9': must be an IPv4 address"),
        ({"host_ipv6": "nope"}, "invalid options.host_ipv6 'nope': must be an IPv6 address"),
    ],
)
def test_bad_options_name_field_and_value(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        build_policy(network(options=options), "nd-a")
    assert str(err.value) == message


def test_unsafe_bridge_name_is_refused() -> None:
    with pytest.raises(InvalidInput) as err:
        build_policy(network(), 'nd-a"; flush ruleset')
    assert err.value.field == "bridge"


def test_options_parsed() -> None:
    p = build_policy(network(options={"enable_icc": "false", "host_ipv6": "2001:db8::1"}), "nd-a")
    assert (p.icc, p.masquerade, p.snat4, str(p.snat6)) == (False, True, None, "2001:db8::1")
    assert p.nat_outbound(4) and p.nat_outbound(6)
    assert not build_policy(network(internal=True), "nd-a").nat_outbound(4)


def test_port_without_host_ip_maps_both_families() -> None:
    rules = endpoint_ports(build_policy(network(), "nd-a"), endpoint("c", PortMapping(80, 8080)))
    assert [(r.version, str(r.dest), r.dest_port) for r in rules] == [
        (4, "10.1.0.2", 8080),
        (6, "fd00::2", 8080),
    ]


def test_host_ip_of_missing_family_is_refused() -> None:
    pm = PortMapping(80, 80, "tcp", ipaddress.ip_address("2001:db8::1"))
    with pytest.raises(InvalidInput) as err:
        endpoint_ports(build_policy(network(), "nd-a"), endpoint("c", pm, v6=False))
    assert err.value.field == "port_mappings[0].host_ip"


@pytest.mark.parametrize(
    ("pm", "field"),
    [
        (PortMapping(0, 80), "port_mappings[0].host_port"),
        (PortMapping(80, 70000), "port_mappings[0].container_port"),
        (PortMapping(80, 80, "icmp"), "port_mappings[0].protocol"),  # type: ignore[arg-type]
    ],
)
def test_bad_ports_are_refused(pm: PortMapping, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        endpoint_ports(build_policy(network(), "nd-a"), endpoint("c", pm))
    assert err.value.field == field


def _state(*eps: Endpoint) -> DesiredState:
    return DesiredState.build([(network(), "nd-a")], list(eps))


def test_conflict_names_the_holder() -> None:
    state = _state(endpoint("holder", PortMapping(8080, 80)))
    late = endpoint("late", PortMapping(8080, 81, "tcp", ipaddress.ip_address("192.0.2.1")))
    with pytest.raises(Conflict) as err:
        state.check_ports(late)
    assert str(err.value) == (
        "publishing host port 192.0.2.1:8080/tcp for container late: "
        "already published by container holder"
    )


def test_no_conflict_across_protocols_or_host_ips() -> None:
    a = ipaddress.ip_address("192.0.2.1")
    b = ipaddress.ip_address("192.0.2.2")
    state = _state(endpoint("one", PortMapping(53, 53, "udp", a)))
    state.check_ports(endpoint("two", PortMapping(53, 53, "tcp", a)))
    state.check_ports(endpoint("three", PortMapping(53, 53, "udp", b)))


def test_readding_an_endpoint_is_not_a_conflict_and_release_frees_the_port() -> None:
    holder = endpoint("holder", PortMapping(8080, 80))
    state = _state(holder)
    state.put_endpoint(holder, state.check_ports(holder))
    state.drop_endpoint(("a" * 64, "holder", "eth0"))
    assert state.claims == {}
    state.check_ports(endpoint("next", PortMapping(8080, 80)))


def test_sync_refuses_a_clashing_state() -> None:
    with pytest.raises(Conflict):
        _state(endpoint("x", PortMapping(1, 1)), endpoint("y", PortMapping(1, 2)))


def test_same_endpoint_cannot_publish_a_port_twice() -> None:
    with pytest.raises(Conflict):
        _state(endpoint("x", PortMapping(1, 1), PortMapping(1, 2)))
