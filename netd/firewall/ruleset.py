"""The nftables ruleset of netd, built as libnftables JSON commands (pure).

Everything lives in two tables: ``inet netd`` (filter and NAT for IPv4 and IPv6) and
``bridge netd`` (inter-container isolation on a bridge, which needs no br_netfilter). The
rules are fixed; what changes with networks, containers and published ports are the elements
of named sets and maps, so adding a container or a port is adding elements, and the number of
rules a packet traverses does not depend on how many exist.

Base chains and priorities (lower runs first; other tables keep their own chains):

    inet netd   forward      filter hook forward      priority filter - 10  (-10)
    inet netd   input        filter hook input        priority filter - 10  (-10)
    inet netd   prerouting   nat    hook prerouting   priority dstnat       (-100)
    inet netd   output       nat    hook output       priority dstnat       (-100)
    inet netd   postrouting  nat    hook postrouting  priority srcnat       (100)
    bridge netd forward      filter hook forward      priority filter       (-200)
    bridge netd prerouting   filter hook prerouting   priority filter       (-200)

Running before firewalld (filter + 10) and Docker/iptables-nft (filter) means our drops
(isolation, internal networks, invalid) apply whatever they accept; our accepts only end our
own chain, so a host firewall that drops still wins. This module builds data; ``nft.py`` sends
it. It never reads the kernel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..model import Endpoint, IPAddress, IPNetwork, Network
from .policy import NetworkPolicy, PortRule, icc_port, spoof_port
from .state import DesiredState

TABLE = "netd"
INET = "inet"
BRIDGE = "bridge"
Cmd = dict[str, Any]

# name -> (family, key type, data type or None, interval?)
SETS: dict[str, tuple[str, list[str] | str, str | None, bool]] = {
    "bridges": (INET, "ifname", None, False),
    "self_pairs": (INET, ["ifname", "ifname"], None, False),
    "internal_ifs": (INET, "ifname", None, False),
    "internal_nets4": (INET, ["ifname", "ipv4_addr"], None, True),
    "internal_nets6": (INET, ["ifname", "ipv6_addr"], None, True),
    "nets4": (INET, ["ifname", "ipv4_addr"], None, True),
    "nets6": (INET, ["ifname", "ipv6_addr"], None, True),
    "gateways4": (INET, ["ifname", "ipv4_addr"], None, False),
    "gateways6": (INET, ["ifname", "ipv6_addr"], None, False),
    # Every gateway address (netd's DNS listens there): never subject to published-port DNAT.
    "dns4": (INET, "ipv4_addr", None, False),
    "dns6": (INET, "ipv6_addr", None, False),
    "masq4": (INET, "ipv4_addr", None, True),
    "masq6": (INET, "ipv6_addr", None, True),
    "snat4": (INET, "ipv4_addr", "ipv4_addr", True),
    "snat6": (INET, "ipv6_addr", "ipv6_addr", True),
    # The subnets of snat4/6 again, as plain sets, for the direct-routing drop: Linux 6.1
    # (Debian 12's kernel) refuses a rule that looks up a map as a set (``ip daddr @snat4``:
    # EINVAL, "Could not process rule: Invalid argument"); 6.12 accepts it.
    "snatnets4": (INET, "ipv4_addr", None, True),
    "snatnets6": (INET, "ipv6_addr", None, True),
    # Published ports: one map to the container address, one to its port (libnftables 1.0.6
    # crashes on JSON maps whose data is a concatenation, so "addr . port" is split in two).
    "pub4_any": (INET, ["inet_proto", "inet_service"], "ipv4_addr", False),
    "pub4_any_port": (INET, ["inet_proto", "inet_service"], "inet_service", False),
    "pub6_any": (INET, ["inet_proto", "inet_service"], "ipv6_addr", False),
    "pub6_any_port": (INET, ["inet_proto", "inet_service"], "inet_service", False),
    "pub4_ip": (INET, ["ipv4_addr", "inet_proto", "inet_service"], "ipv4_addr", False),
    "pub4_ip_port": (INET, ["ipv4_addr", "inet_proto", "inet_service"], "inet_service", False),
    "pub6_ip": (INET, ["ipv6_addr", "inet_proto", "inet_service"], "ipv6_addr", False),
    "pub6_ip_port": (INET, ["ipv6_addr", "inet_proto", "inet_service"], "inet_service", False),
    "no_icc_ports": (BRIDGE, "ifname", None, False),
    # anti_spoof=true: the host veths whose senders are checked, and what each may send from.
    "spoof_ports": (BRIDGE, "ifname", None, False),
    "port_addrs4": (BRIDGE, ["ifname", "ipv4_addr"], None, False),
    "port_addrs6": (BRIDGE, ["ifname", "ipv6_addr"], None, False),
}

# name -> (family, type, hook, priority)
CHAINS: dict[str, tuple[str, str, str, int]] = {
    "forward": (INET, "filter", "forward", -10),
    "input": (INET, "filter", "input", -10),
    "prerouting": (INET, "nat", "prerouting", -100),
    "output": (INET, "nat", "output", -100),
    "postrouting": (INET, "nat", "postrouting", 100),
    "bridge_forward": (BRIDGE, "filter", "forward", -200),
    # Every frame a port sends, also to the host (the gateway, DNS): forward sees bridged only.
    "bridge_prerouting": (BRIDGE, "filter", "prerouting", -200),
}


def _chain_name(chain: str) -> str:
    return chain.removeprefix("bridge_")


# --- expression helpers -------------------------------------------------------------------


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, fieldname: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": fieldname}}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _concat(*items: Any) -> dict[str, Any]:
    return {"concat": list(items)}


def _ipfam(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _prefix(net: IPNetwork) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


FIB_LOCAL = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
IIF_BRIDGE = _match(_meta("iifname"), "@bridges")
OIF_BRIDGE = _match(_meta("oifname"), "@bridges")
SAME_BRIDGE = _concat(_meta("iifname"), _meta("oifname"))
DROP: dict[str, Any] = {"drop": None}
LINK_SCOPE6 = {
    "set": [{"prefix": {"addr": "fe80::", "len": 10}}, {"prefix": {"addr": "ff00::", "len": 8}}]
}


def _rule(chain: str, *expr: dict[str, Any]) -> Cmd:
    family = CHAINS[chain][0]
    return {
        "add": {
            "rule": {
                "family": family,
                "table": TABLE,
                "chain": _chain_name(chain),
                "expr": list(expr),
            }
        }
    }


# --- rules ----------------------------------------------------------------------------------


def build_forward_rules() -> list[Cmd]:
    """The forward chain: invalid, same-bridge, internal networks, isolation, direct routing."""
    rules: list[Cmd] = [
        # iifname @bridges ct state invalid drop
        _rule("forward", IIF_BRIDGE, _match({"ct": {"key": "state"}}, "invalid", "in"), DROP),
        # oifname @bridges ct state invalid drop
        _rule("forward", OIF_BRIDGE, _match({"ct": {"key": "state"}}, "invalid", "in"), DROP),
        # iifname . oifname @self_pairs accept   (within one bridge: ICC is the bridge table's job)
        _rule("forward", _match(SAME_BRIDGE, "@self_pairs"), {"accept": None}),
    ]
    for v in (4, 6):
        fam = _ipfam(v)
        # iifname @internal_ifs iifname . ip daddr != @internal_nets4 drop   (and ip6)
        rules.append(
            _rule(
                "forward",
                _match(_meta("iifname"), "@internal_ifs"),
                _match(
                    _concat(_meta("iifname"), _payload(fam, "daddr")), f"@internal_nets{v}", "!="
                ),
                DROP,
            )
        )
        # oifname @internal_ifs oifname . ip saddr != @internal_nets4 drop   (and ip6)
        rules.append(
            _rule(
                "forward",
                _match(_meta("oifname"), "@internal_ifs"),
                _match(
                    _concat(_meta("oifname"), _payload(fam, "saddr")), f"@internal_nets{v}", "!="
                ),
                DROP,
            )
        )
    rules += [
        # iifname @bridges oifname @bridges ct status dnat accept   (published ports cross)
        _rule(
            "forward",
            IIF_BRIDGE,
            OIF_BRIDGE,
            _match({"ct": {"key": "status"}}, "dnat", "in"),
            {"accept": None},
        ),
        # iifname @bridges oifname @bridges drop   (isolation between netd networks)
        _rule("forward", IIF_BRIDGE, OIF_BRIDGE, DROP),
    ]
    return rules + build_direct_routing_rules()


def build_direct_routing_rules() -> list[Cmd]:
    """forward: no new connection from outside into a NATed network unless it was DNATed.

    What Docker 28 does for its NAT-mode networks: a neighbour with a route to a container
    subnet via the host reaches published ports only. ``masq*``/``snatnets*`` hold the
    container subnets of networks with outbound NAT, so they are matched against the
    destination here; ``enable_ip_masquerade=false`` (routed) networks are in neither and stay
    reachable. Not the ``snat*`` maps themselves: Linux 6.1 refuses a map as a set (EINVAL).
    ``ct status != dnat`` would compare the whole status word (always unequal for a DNATed
    connection, which has other bits set too); ``!`` tests the one bit.
    """
    rules: list[Cmd] = []
    for v in (4, 6):
        fam = _ipfam(v)
        for nat in (f"masq{v}", f"snatnets{v}"):
            # iifname != @bridges oifname @bridges ct state new ct status ! dnat
            #     ip daddr @masq4 drop                (and @snatnets4, ip6 @masq6/@snatnets6)
            rules.append(
                _rule(
                    "forward",
                    _match(_meta("iifname"), "@bridges", "!="),
                    OIF_BRIDGE,
                    _match({"ct": {"key": "state"}}, "new", "in"),
                    _match({"ct": {"key": "status"}}, "dnat", "!"),
                    _match(_payload(fam, "daddr"), f"@{nat}"),
                    DROP,
                )
            )
    return rules


def build_input_rules() -> list[Cmd]:
    """The input chain: DNS to the gateway, internal networks reach only their subnets."""
    rules: list[Cmd] = []
    for v in (4, 6):
        fam = _ipfam(v)
        # meta l4proto { tcp, udp } th dport 53 iifname . ip daddr @gateways4 accept   (and ip6)
        rules.append(
            _rule(
                "input",
                _match(_meta("l4proto"), {"set": ["tcp", "udp"]}),
                _match(_payload("th", "dport"), 53),
                _match(_concat(_meta("iifname"), _payload(fam, "daddr")), f"@gateways{v}"),
                {"accept": None},
            )
        )
    # iifname @internal_ifs iifname . ip daddr != @internal_nets4 drop
    rules.append(
        _rule(
            "input",
            _match(_meta("iifname"), "@internal_ifs"),
            _match(_concat(_meta("iifname"), _payload("ip", "daddr")), "@internal_nets4", "!="),
            DROP,
        )
    )
    # iifname @internal_ifs ip6 daddr != { fe80::/10, ff00::/8 }
    #     iifname . ip6 daddr != @internal_nets6 drop      (neighbour discovery must pass)
    rules.append(
        _rule(
            "input",
            _match(_meta("iifname"), "@internal_ifs"),
            _match(_payload("ip6", "daddr"), LINK_SCOPE6, "!="),
            _match(_concat(_meta("iifname"), _payload("ip6", "daddr")), "@internal_nets6", "!="),
            DROP,
        )
    )
    return rules


def _dnat(version: int, key: dict[str, Any], maps: str) -> dict[str, Any]:
    return {
        "dnat": {
            "family": _ipfam(version),
            "addr": {"map": {"key": key, "data": f"@{maps}"}},
            "port": {"map": {"key": key, "data": f"@{maps}_port"}},
        }
    }


def build_dnat_rules(chain: str) -> list[Cmd]:
    """prerouting/output: published ports, by host address first, then on any local address.

    DNS to a gateway is netd's own resolver: a container publishing host port 53 (pihole)
    must not take it over for every network of the host, so it returns before any DNAT.
    """
    rules: list[Cmd] = []
    l4 = (_meta("l4proto"), _payload("th", "dport"))
    for v in (4, 6):
        fam = _ipfam(v)
        # meta l4proto { tcp, udp } th dport 53 ip daddr @dns4 return   (and ip6)
        rules.append(
            _rule(
                chain,
                _match(_meta("l4proto"), {"set": ["tcp", "udp"]}),
                _match(_payload("th", "dport"), 53),
                _match(_payload(fam, "daddr"), f"@dns{v}"),
                {"return": None},
            )
        )
        # dnat ip to ip daddr . meta l4proto . th dport map @pub4_ip
        #         : ip daddr . meta l4proto . th dport map @pub4_ip_port          (and ip6)
        rules.append(_rule(chain, _dnat(v, _concat(_payload(fam, "daddr"), *l4), f"pub{v}_ip")))
        # fib daddr type local
        #     dnat ip to meta l4proto . th dport map @pub4_any
        #         : meta l4proto . th dport map @pub4_any_port                    (and ip6)
        rules.append(_rule(chain, FIB_LOCAL, _dnat(v, _concat(*l4), f"pub{v}_any")))
    return rules


def build_postrouting_rules() -> list[Cmd]:
    """postrouting: hairpin, host loopback, outbound masquerade/SNAT."""
    masq = {"masquerade": None}
    rules: list[Cmd] = []
    for v in (4, 6):
        # ct status dnat oifname . ip saddr @nets4 masquerade   (and ip6)
        # Hairpin: a container reached a published port of its own network. (iifname is
        # always empty in postrouting, so the source subnet tells where the packet came from.)
        rules.append(
            _rule(
                "postrouting",
                _match({"ct": {"key": "status"}}, "dnat", "in"),
                _match(_concat(_meta("oifname"), _payload(_ipfam(v), "saddr")), f"@nets{v}"),
                masq,
            )
        )
    rules += [
        # ip saddr 127.0.0.0/8 oifname @bridges masquerade   (host loopback to a published port)
        _rule(
            "postrouting",
            _match(_payload("ip", "saddr"), {"prefix": {"addr": "127.0.0.0", "len": 8}}),
            OIF_BRIDGE,
            masq,
        ),
    ]
    for v in (4, 6):
        fam = _ipfam(v)
        # oifname != @bridges ip saddr @masq4 masquerade   (and ip6)
        rules.append(
            _rule(
                "postrouting",
                _match(_meta("oifname"), "@bridges", "!="),
                _match(_payload(fam, "saddr"), f"@masq{v}"),
                masq,
            )
        )
        # oifname != @bridges snat ip to ip saddr map @snat4   (and ip6)
        rules.append(
            _rule(
                "postrouting",
                _match(_meta("oifname"), "@bridges", "!="),
                {
                    "snat": {
                        "family": fam,
                        "addr": {"map": {"key": _payload(fam, "saddr"), "data": f"@snat{v}"}},
                    }
                },
            )
        )
    return rules


def build_bridge_rules() -> list[Cmd]:
    """bridge netd forward: enable_icc=false ports may not talk to other ports of the bridge."""
    # meta protocol { ip, ip6 } iifname @no_icc_ports drop
    return [
        _rule(
            "bridge_forward",
            _match(_meta("protocol"), {"set": ["ip", "ip6"]}),
            _match(_meta("iifname"), "@no_icc_ports"),
            DROP,
        )
    ]


def build_antispoof_rules() -> list[Cmd]:
    """bridge netd prerouting: anti_spoof ports send only from their own addresses.

    IPv6 link-local and unspecified sources pass (neighbour discovery, DAD: every port has
    its own link-local address, which netd does not assign), as do ARP probes (sender
    0.0.0.0). MAC addresses are not checked.
    """
    port = _meta("iifname")
    return [
        # iifname @spoof_ports meta protocol ip iifname . ip saddr != @port_addrs4 drop
        _rule(
            "bridge_prerouting",
            _match(port, "@spoof_ports"),
            _match(_meta("protocol"), "ip"),
            _match(_concat(port, _payload("ip", "saddr")), "@port_addrs4", "!="),
            DROP,
        ),
        # iifname @spoof_ports meta protocol ip6 ip6 saddr != { ::, fe80::/10 }
        #     iifname . ip6 saddr != @port_addrs6 drop
        _rule(
            "bridge_prerouting",
            _match(port, "@spoof_ports"),
            _match(_meta("protocol"), "ip6"),
            _match(
                _payload("ip6", "saddr"),
                {"set": ["::", {"prefix": {"addr": "fe80::", "len": 10}}]},
                "!=",
            ),
            _match(_concat(port, _payload("ip6", "saddr")), "@port_addrs6", "!="),
            DROP,
        ),
        # iifname @spoof_ports meta protocol arp arp saddr ip != 0.0.0.0
        #     iifname . arp saddr ip != @port_addrs4 drop   (no claiming a neighbour's address)
        _rule(
            "bridge_prerouting",
            _match(port, "@spoof_ports"),
            _match(_meta("protocol"), "arp"),
            _match(_payload("arp", "saddr ip"), "0.0.0.0", "!="),
            _match(_concat(port, _payload("arp", "saddr ip")), "@port_addrs4", "!="),
            DROP,
        ),
    ]


def build_rules() -> list[Cmd]:
    """Every rule of netd, in chain order (constant: independent of networks and ports)."""
    return (
        build_forward_rules()
        + build_input_rules()
        + build_dnat_rules("prerouting")
        + build_dnat_rules("output")
        + build_postrouting_rules()
        + build_bridge_rules()
        + build_antispoof_rules()
    )


# --- elements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Elem:
    """One set/map element, hashable (key and data kept as canonical JSON text)."""

    set: str
    key: str
    data: str | None = None
    comment: str | None = None

    @staticmethod
    def of(setname: str, key: Any, data: Any = None, comment: str | None = None) -> Elem:
        """Build from JSON-able key/data."""
        dump = json.dumps
        return Elem(setname, dump(key), None if data is None else dump(data), comment)

    def add_json(self) -> Any:
        """The element as ``add element`` takes it (with its owner comment)."""
        val: Any = json.loads(self.key)
        if self.comment:
            val = {"elem": {"val": val, "comment": self.comment}}
        return val if self.data is None else [val, json.loads(self.data)]

    def key_json(self) -> Any:
        """The element key as ``delete element`` takes it."""
        return json.loads(self.key)


def endpoint_comment(policy: NetworkPolicy, container_id: str) -> str:
    """Owner comment on an endpoint's elements: ``netd:<net12>:<container id>`` (≤ 128)."""
    return f"{policy.tag}:{container_id}"[:128]


def build_network_elements(policy: NetworkPolicy) -> list[Elem]:
    """The elements that make a network known to the fixed rules."""
    br, tag = policy.bridge, policy.tag
    out = [Elem.of("bridges", br, comment=tag), Elem.of("self_pairs", _concat(br, br), comment=tag)]
    for v in (4, 6):
        for net in policy.subnets(v):
            out.append(Elem.of(f"nets{v}", _concat(br, _prefix(net)), comment=tag))
        for gw in policy.gateways(v):
            out.append(Elem.of(f"gateways{v}", _concat(br, str(gw)), comment=tag))
            out.append(Elem.of(f"dns{v}", str(gw), comment=tag))
        if policy.internal:
            for net in policy.subnets(v):
                out.append(Elem.of(f"internal_nets{v}", _concat(br, _prefix(net)), comment=tag))
        elif policy.nat_outbound(v):
            snat: IPAddress | None = policy.snat(v)
            for net in policy.subnets(v):
                if snat is None:
                    out.append(Elem.of(f"masq{v}", _prefix(net), comment=tag))
                else:
                    out.append(Elem.of(f"snat{v}", _prefix(net), str(snat), comment=tag))
                    out.append(Elem.of(f"snatnets{v}", _prefix(net), comment=tag))
    if policy.internal:
        out.append(Elem.of("internal_ifs", br, comment=tag))
    return out


def port_elems(policy: NetworkPolicy, rule: PortRule) -> list[Elem]:
    """The two DNAT map elements (address, port) of one published port."""
    proto, v = rule.protocol, rule.version
    comment = endpoint_comment(policy, rule.owner)
    if rule.host_ip is None:
        name, key = f"pub{v}_any", _concat(proto, rule.host_port)
    else:
        name, key = f"pub{v}_ip", _concat(str(rule.host_ip), proto, rule.host_port)
    return [
        Elem.of(name, key, str(rule.dest), comment),
        Elem.of(f"{name}_port", key, rule.dest_port, comment),
    ]


def build_endpoint_elements(
    policy: NetworkPolicy,
    host_ifname: str | None,
    rules: tuple[PortRule, ...],
    spoof: tuple[str, tuple[IPAddress, ...]] | None = None,
    owner: str = "",
) -> list[Elem]:
    """The elements of one endpoint: its published ports, with ICC off its bridge port, with
    anti_spoof its port and the addresses it may send from (``spoof``; ``owner``: container id
    for their comments)."""
    out = [e for r in rules for e in port_elems(policy, r)]
    if host_ifname is not None:
        out.append(Elem.of("no_icc_ports", host_ifname, comment=policy.tag))
    if spoof is not None:
        port, addrs = spoof
        tag = endpoint_comment(policy, owner) if owner else policy.tag
        out.append(Elem.of("spoof_ports", port, comment=tag))
        for addr in addrs:
            out.append(Elem.of(f"port_addrs{addr.version}", _concat(port, str(addr)), comment=tag))
    return out


def endpoint_elements(
    policy: NetworkPolicy, endpoint: Endpoint, rules: tuple[PortRule, ...]
) -> list[Elem]:
    """:func:`build_endpoint_elements` for a recorded endpoint (ICC and anti_spoof from policy)."""
    return build_endpoint_elements(
        policy,
        icc_port(policy, endpoint),
        rules,
        spoof_port(policy, endpoint),
        endpoint.container_id,
    )


def state_elements(state: DesiredState) -> list[Elem]:
    """Every element of a whole desired state."""
    out: list[Elem] = []
    for policy in state.policies():
        out += build_network_elements(policy)
        for ep in state.endpoints_of(policy.network_id):
            rules = state.endpoints[(ep.network_id, ep.container_id, ep.ifname)][1]
            out += endpoint_elements(policy, ep, rules)
    return out


# --- commands ---------------------------------------------------------------------------------


def _grouped(elems: list[Elem]) -> dict[str, list[Elem]]:
    groups: dict[str, list[Elem]] = {}
    for e in elems:
        groups.setdefault(e.set, []).append(e)
    return groups


def build_element_changes(add: list[Elem], delete: list[Elem]) -> list[Cmd]:
    """Commands deleting then adding elements (one transaction when sent together)."""
    cmds: list[Cmd] = []
    for verb, elems in (("delete", delete), ("add", add)):
        for name, group in sorted(_grouped(elems).items()):
            family = SETS[name][0]
            values = [e.key_json() if verb == "delete" else e.add_json() for e in group]
            cmds.append(
                {
                    verb: {
                        "element": {"family": family, "table": TABLE, "name": name, "elem": values}
                    }
                }
            )
    return cmds


def _set_cmd(name: str) -> Cmd:
    family, keytype, datatype, interval = SETS[name]
    body: dict[str, Any] = {"family": family, "table": TABLE, "name": name, "type": keytype}
    if interval:
        body["flags"] = ["interval"]
    if datatype is None:
        return {"add": {"set": body}}
    body["map"] = datatype
    return {"add": {"map": body}}


def _chain_cmd(chain: str) -> Cmd:
    family, ctype, hook, prio = CHAINS[chain]
    return {
        "add": {
            "chain": {
                "family": family,
                "table": TABLE,
                "name": _chain_name(chain),
                "type": ctype,
                "hook": hook,
                "prio": prio,
                "policy": "accept",
            }
        }
    }


def build_teardown() -> list[Cmd]:
    """Remove both netd tables, whether or not they exist (add-then-delete is idempotent)."""
    cmds: list[Cmd] = []
    for family in (INET, BRIDGE):
        table = {"table": {"family": family, "name": TABLE}}
        cmds += [{"add": table}, {"delete": table}]
    return cmds


def build_ruleset_from_state(state: DesiredState) -> list[Cmd]:
    """The whole ruleset for ``state`` as one batch: drop both tables, recreate everything.

    Deleting and re-adding (rather than ``flush table``) also clears set elements and lets a
    newer netd change a set's type; the batch is atomic, so packets never see a gap.
    With no networks the result only removes the tables.
    """
    cmds = build_teardown()
    if not state.networks:
        return cmds
    for family in (INET, BRIDGE):
        cmds.append({"add": {"table": {"family": family, "name": TABLE}}})
    cmds += [_set_cmd(name) for name in SETS]
    cmds += [_chain_cmd(chain) for chain in CHAINS]
    cmds += build_rules()
    cmds += build_element_changes(state_elements(state), [])
    return cmds


def build_ruleset(networks: list[tuple[Network, str]], endpoints: list[Endpoint]) -> list[Cmd]:
    """The whole ruleset for these networks (with their bridges) and endpoints.

    Validates everything first (InvalidInput, Conflict); see :func:`build_ruleset_from_state`.
    """
    return build_ruleset_from_state(DesiredState.build(networks, endpoints))


def rule_counts() -> dict[tuple[str, str], int]:
    """How many rules each (family, chain) holds: the monitor's cheap fingerprint."""
    counts: dict[tuple[str, str], int] = {}
    for cmd in build_rules():
        rule = cmd["add"]["rule"]
        key = (rule["family"], rule["chain"])
        counts[key] = counts.get(key, 0) + 1
    return counts
