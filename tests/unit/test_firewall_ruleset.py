"""The nftables ruleset builder: golden JSON, constant rule count, element changes."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from kit import endpoint, network, subnet

from netd.firewall import ruleset
from netd.firewall.policy import build_policy
from netd.firewall.state import DesiredState
from netd.model import Endpoint, Network, PortMapping

GOLDEN = Path(__file__).parent / "golden"


def net(nid: str, cidrs: list[tuple[str, str]], **kw: Any) -> Network:
    subnets = [subnet(c, gateway=g) for c, g in cidrs]
    return network(f"n{nid}", subnets, id=nid * 64, **kw)


NET_A = net("a", [("10.1.0.0/24", "10.1.0.1"), ("fd00:a::/64", "fd00:a::1")], ipv6=True)
NET_I = net("b", [("10.2.0.0/24", "10.2.0.1")], internal=True)
NET_C = net(
    "c", [("10.3.0.0/24", "10.3.0.1")], options={"enable_icc": "false", "host_ipv4": "192.0.2.1"}
)


def ep(
    network: Network, cid: str, addrs: list[str], ports: tuple[PortMapping, ...] = ()
) -> Endpoint:
    return endpoint(network, cid, ip=addrs, host_ifname=f"nv{cid}", port_mappings=ports)


WEB = ep(
    NET_A,
    "web",
    ["10.1.0.2/24", "fd00:a::2/64"],
    (PortMapping(8080, 80), PortMapping(53, 53, "udp", ipaddress.ip_address("192.0.2.1"))),
)
DB = ep(NET_C, "db", ["10.3.0.2/24"], (PortMapping(9000, 90, "sctp"),))
NETWORKS = [(NET_A, "nd-a"), (NET_I, "nd-b"), (NET_C, "nd-c")]


def check_golden(name: str, data: object) -> None:
    path = GOLDEN / name
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; UPDATE_GOLDEN=1 rewrites it after review"


def test_full_ruleset_matches_golden() -> None:
    check_golden("firewall_ruleset.json", ruleset.build_ruleset(NETWORKS, [WEB, DB]))


def test_endpoint_elements_match_golden() -> None:
    policy = build_policy(NET_C, "nd-c")
    state = DesiredState.build(NETWORKS, [])
    rules = state.check_ports(DB)
    elems = ruleset.build_endpoint_elements(policy, "nvdb", rules)
    check_golden("firewall_add_endpoint.json", ruleset.build_element_changes(elems, []))


def _rules(cmds: list[ruleset.Cmd]) -> int:
    return sum(1 for c in cmds if "add" in c and "rule" in c["add"])


def test_rule_count_does_not_grow_with_ports_or_networks() -> None:
    small = ruleset.build_ruleset([(NET_A, "nd-a")], [WEB])
    many = [
        ep(NET_A, f"c{i}", [f"10.1.{i // 250}.{i % 250 + 2}/16"], (PortMapping(10000 + i, 80),))
        for i in range(300)
    ]
    big_net = net("a", [("10.1.0.0/16", "10.1.0.1")])
    big = ruleset.build_ruleset([*NETWORKS[1:], (big_net, "nd-a")], many)
    assert _rules(small) == _rules(big) == len(ruleset.build_rules())
    elements = sum(len(c["add"]["element"]["elem"]) for c in big if "element" in c.get("add", {}))
    assert elements > 600


def test_no_networks_only_removes_tables() -> None:
    cmds = ruleset.build_ruleset([], [])
    assert cmds == [
        {"add": {"table": {"family": "inet", "name": "netd"}}},
        {"delete": {"table": {"family": "inet", "name": "netd"}}},
        {"add": {"table": {"family": "bridge", "name": "netd"}}},
        {"delete": {"table": {"family": "bridge", "name": "netd"}}},
    ]


def test_internal_network_has_no_nat_and_no_ports() -> None:
    policy = build_policy(NET_I, "nd-b")
    sets = {e.set for e in ruleset.build_network_elements(policy)}
    assert sets == {
        "bridges",
        "self_pairs",
        "nets4",
        "gateways4",
        "dns4",
        "internal_nets4",
        "internal_ifs",
    }
    state = DesiredState.build(NETWORKS, [])
    assert state.check_ports(ep(NET_I, "x", ["10.2.0.5/24"], (PortMapping(80, 80),))) == ()


def test_masquerade_off_and_snat() -> None:
    off = net("d", [("10.4.0.0/24", "10.4.0.1")], options={"enable_ip_masquerade": "false"})
    sets = {e.set for e in ruleset.build_network_elements(build_policy(off, "nd-d"))}
    assert not sets & {"masq4", "snat4", "snatnets4"}
    snat = ruleset.build_network_elements(build_policy(NET_C, "nd-c"))
    subnet = {"prefix": {"addr": "10.3.0.0", "len": 24}}
    assert [e for e in snat if e.set == "snat4"] == [
        ruleset.Elem.of("snat4", subnet, "192.0.2.1", "netd:cccccccccccc")
    ]
    # The same subnet, with the same owner, in the plain set the direct-routing drop looks up.
    assert [e for e in snat if e.set == "snatnets4"] == [
        ruleset.Elem.of("snatnets4", subnet, comment="netd:cccccccccccc")
    ]
    assert not {e.set for e in snat} & {"masq4", "masq6", "snat6", "snatnets6"}


def test_snatnets_hold_exactly_the_keys_of_the_snat_maps() -> None:
    dual = net(
        "e",
        [("10.5.0.0/24", "10.5.0.1"), ("10.6.0.0/24", "10.6.0.1"), ("fd00:e::/64", "fd00:e::1")],
        ipv6=True,
        options={"host_ipv4": "192.0.2.1", "host_ipv6": "2001:db8::1"},
    )
    elems = ruleset.build_network_elements(build_policy(dual, "nd-e"))
    for v in (4, 6):
        snat = [(e.key, e.comment) for e in elems if e.set == f"snat{v}"]
        assert snat and snat == [(e.key, e.comment) for e in elems if e.set == f"snatnets{v}"]
    assert ruleset.SETS["snatnets4"] == ("inet", "ipv4_addr", None, True)
    assert ruleset.SETS["snatnets6"] == ("inet", "ipv6_addr", None, True)


def _set_refs(value: object) -> list[str]:
    """Every ``@name`` a rule expression refers to, at any depth."""
    if isinstance(value, str):
        return [value[1:]] if value.startswith("@") else []
    if isinstance(value, dict):
        return [r for v in value.values() for r in _set_refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _set_refs(v)]
    return []


def test_no_rule_looks_up_a_map_as_a_set() -> None:
    """Linux 6.1 (Debian 12) refuses ``ip daddr @snat4`` with snat4 a map: EINVAL, the whole
    ruleset fails. Maps may only be used where a rule maps (``dnat``/``snat ... map @m``)."""
    for cmd in ruleset.build_rules():
        rule = cmd["add"]["rule"]
        for expr in rule["expr"]:
            if "match" not in expr:
                continue
            for name in _set_refs(expr["match"]["right"]):
                assert ruleset.SETS[name][2] is None, (name, rule["chain"], rule["expr"])


def test_delete_commands_carry_keys_only() -> None:
    elem = ruleset.Elem.of("pub4_any", {"concat": ["tcp", 80]}, "10.0.0.2", "netd:x:c")
    assert ruleset.build_element_changes([], [elem]) == [
        {
            "delete": {
                "element": {
                    "family": "inet",
                    "table": "netd",
                    "name": "pub4_any",
                    "elem": [{"concat": ["tcp", 80]}],
                }
            }
        }
    ]


def test_direct_routing_drops_test_the_dnat_bit() -> None:
    rules = [c["add"]["rule"] for c in ruleset.build_direct_routing_rules()]
    assert all(r["family"] == "inet" and r["chain"] == "forward" for r in rules)
    assert [r["expr"][4]["match"]["right"] for r in rules] == [
        "@masq4",
        "@snatnets4",
        "@masq6",
        "@snatnets6",
    ]
    assert [r["expr"][4]["match"]["left"]["payload"] for r in rules] == [
        {"protocol": fam, "field": "daddr"} for fam in ("ip", "ip", "ip6", "ip6")
    ]
    for r in rules:
        iif, oif, state, status, _, verdict = r["expr"]
        assert iif["match"] == {
            "op": "!=",
            "left": {"meta": {"key": "iifname"}},
            "right": "@bridges",
        }
        assert oif == ruleset.OIF_BRIDGE and verdict == ruleset.DROP
        assert state["match"] == {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}
        # "!" is a bit test (status & dnat == 0); "!=" would compare the whole status word.
        assert status["match"] == {"op": "!", "left": {"ct": {"key": "status"}}, "right": "dnat"}
    # The drops come last: after the isolation rules of bridge-to-bridge traffic.
    forward = [c["add"]["rule"] for c in ruleset.build_forward_rules()]
    assert forward[-4:] == rules and ruleset.rule_counts()[("inet", "forward")] == 13


def test_gateway_dns_returns_before_published_port_dnat() -> None:
    # A container publishing host port 53 (pihole) must not capture netd's DNS on gateways:
    # in both nat chains, DNS to a gateway (the dns4/dns6 sets) returns before any DNAT.
    for chain in ("prerouting", "output"):
        exprs = [r["add"]["rule"]["expr"] for r in ruleset.build_dnat_rules(chain)]
        for v, fam in ((4, "ip"), (6, "ip6")):
            ret = next(
                i for i, e in enumerate(exprs) if e[-1] == {"return": None} and f"@dns{v}" in str(e)
            )
            assert exprs[ret][1] == {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "th", "field": "dport"}},
                    "right": 53,
                }
            }
            assert exprs[ret][2]["match"]["left"] == {
                "payload": {"protocol": fam, "field": "daddr"}
            }
            first_dnat = next(
                i for i, e in enumerate(exprs) if "dnat" in e[-1] and f"pub{v}" in str(e)
            )
            assert ret < first_dnat
    elems = ruleset.build_network_elements(build_policy(NET_A, "nd-a"))
    assert {(e.set, e.key) for e in elems if e.set.startswith("dns")} == {
        ("dns4", '"10.1.0.1"'),
        ("dns6", '"fd00:a::1"'),
    }
