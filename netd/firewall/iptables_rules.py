"""netd's iptables rules, rendered as ``iptables-restore --noflush`` input (pure).

One render covers one address family (``iptables-restore`` for IPv4, ``ip6tables-restore``
for IPv6) and both tables netd uses, ``filter`` and ``nat``. All rules live in netd's own
chains; the built-in chains only get one jump each, at the top, rendered only when missing
(the caller reads ``iptables-save`` first), so inserting is idempotent. Declaring a chain
(``:NETD-FORWARD - [0:0]``) under ``--noflush`` empties it, so each render replaces netd's
chains whole and each table is committed atomically.

    filter FORWARD     -> NETD-FORWARD -> (direct-routing drop per NATed network)
                                          NETD-I-<net>/NETD-O-<net> (internal), NETD-ISOLATION
                                          NETD-ISOLATION -> NETD-ISOLATION-2
    filter INPUT       -> NETD-INPUT   -> NETD-I-<net> (internal)
    nat    PREROUTING  -> NETD-PREROUTING -> NETD-DNAT
    nat    OUTPUT      -> NETD-OUTPUT     -> NETD-DNAT
    nat    POSTROUTING -> NETD-POSTROUTING

Unlike the nftables backend, rules here grow with networks and ports (iptables has no maps
without ipset); that is the price of this fallback. This module does not run anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import IPAddress
from .policy import NetworkPolicy, PortRule
from .state import DesiredState

JUMPS: dict[str, dict[str, str]] = {
    "filter": {"FORWARD": "NETD-FORWARD", "INPUT": "NETD-INPUT"},
    "nat": {
        "PREROUTING": "NETD-PREROUTING",
        "OUTPUT": "NETD-OUTPUT",
        "POSTROUTING": "NETD-POSTROUTING",
    },
}
FIXED_CHAINS: dict[str, list[str]] = {
    "filter": ["NETD-FORWARD", "NETD-INPUT", "NETD-ISOLATION", "NETD-ISOLATION-2"],
    "nat": ["NETD-PREROUTING", "NETD-OUTPUT", "NETD-POSTROUTING", "NETD-DNAT"],
}


@dataclass
class Existing:
    """What ``iptables-save`` showed of netd: its chains and the built-in chains jumping in."""

    chains: dict[str, set[str]] = field(default_factory=lambda: {"filter": set(), "nat": set()})
    jumps: dict[str, set[str]] = field(default_factory=lambda: {"filter": set(), "nat": set()})
    rules: dict[str, int] = field(default_factory=dict)  # NETD chain -> rule count


def parse_save(text: str) -> Existing:
    """Read netd's chains, jumps and rule counts from ``iptables-save`` output."""
    found = Existing()
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table in found.chains and line.startswith(":NETD-"):
            found.chains[table].add(line[1:].split()[0])
        elif table in found.chains and line.startswith("-A "):
            parts = line.split()
            chain = parts[1]
            if chain.startswith("NETD-"):
                found.rules[chain] = found.rules.get(chain, 0) + 1
            elif JUMPS[table].get(chain) in parts and parts[-2:] == ["-j", JUMPS[table][chain]]:
                found.jumps[table].add(chain)
    return found


def _net(policy: NetworkPolicy, suffix: str) -> str:
    # XT_EXTENSION_MAXNAMELEN is 29 with the NUL: "NETD-I-" + 12 hex characters fits.
    return f"NETD-{suffix}-{policy.network_id[:12]}"


def _host(addr: IPAddress) -> str:
    return f"{addr}/{addr.max_prefixlen}"


def _to(rule: PortRule) -> str:
    dest = f"[{rule.dest}]" if rule.version == 6 else str(rule.dest)
    return f"{dest}:{rule.dest_port}"


@dataclass
class Render:
    """Rendered rules per table and chain (kept apart so counts are known)."""

    version: int
    chains: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {"filter": {}, "nat": {}}
    )

    def add(self, table: str, chain: str, rule: str) -> None:
        """Append ``-A chain rule``."""
        self.chains[table].setdefault(chain, []).append(f"-A {chain} {rule}")

    def declare(self, table: str, chain: str) -> None:
        """Make sure ``chain`` is declared even when it has no rules."""
        self.chains[table].setdefault(chain, [])

    def counts(self) -> dict[str, int]:
        """Rule count per netd chain: what ``check`` compares with the kernel."""
        return {c: len(r) for t in self.chains.values() for c, r in t.items()}


def _render_filter(r: Render, policies: list[NetworkPolicy]) -> None:
    v = r.version
    for chain in FIXED_CHAINS["filter"]:
        r.declare("filter", chain)
    for p in policies:
        b = p.bridge
        r.add("filter", "NETD-FORWARD", f"-i {b} -m conntrack --ctstate INVALID -j DROP")
        r.add("filter", "NETD-FORWARD", f"-o {b} -m conntrack --ctstate INVALID -j DROP")
    for p in policies:
        b = p.bridge
        if not p.icc:
            # Bridged traffic reaches FORWARD as -i br -o br only with br_netfilter loaded
            # (bridge-nf-call-iptables=1); hairpin to a published port (DNAT) stays allowed.
            r.add("filter", "NETD-FORWARD", f"-i {b} -o {b} -m conntrack ! --ctstate DNAT -j DROP")
        r.add("filter", "NETD-FORWARD", f"-i {b} -o {b} -j RETURN")
    for p in policies:
        if p.nat_outbound(v):
            # Direct routing (Docker 28): from outside, only published ports (DNAT) may open
            # connections into a NATed network; routed (no masquerade) networks are exempt.
            # Written as iptables-save prints it, so recover and describe read it back as is.
            r.add(
                "filter",
                "NETD-FORWARD",
                f"! -i {p.bridge} -o {p.bridge} -m conntrack --ctstate NEW "
                "-m conntrack ! --ctstate DNAT -j DROP",
            )
    for p in policies:
        if not p.internal:
            continue
        b, inner, outer = p.bridge, _net(p, "I"), _net(p, "O")
        r.add("filter", "NETD-FORWARD", f"-i {b} -j {inner}")
        r.add("filter", "NETD-FORWARD", f"-o {b} -j {outer}")
        for net in p.subnets(v):
            r.add("filter", inner, f"-d {net} -j RETURN")
            r.add("filter", outer, f"-s {net} -j RETURN")
        if v == 6:  # neighbour discovery with the gateway must pass
            r.add("filter", inner, "-d fe80::/10 -j RETURN")
            r.add("filter", inner, "-d ff00::/8 -j RETURN")
        r.add("filter", inner, "-j DROP")
        r.add("filter", outer, "-j DROP")
    r.add("filter", "NETD-FORWARD", "-j NETD-ISOLATION")
    r.add("filter", "NETD-ISOLATION", "-m conntrack --ctstate DNAT -j RETURN")
    for p in policies:
        r.add("filter", "NETD-ISOLATION", f"-i {p.bridge} -j NETD-ISOLATION-2")
        r.add("filter", "NETD-ISOLATION-2", f"-o {p.bridge} -j DROP")
    for p in policies:
        for gw in p.gateways(v):
            for proto in ("udp", "tcp"):
                r.add(
                    "filter",
                    "NETD-INPUT",
                    f"-i {p.bridge} -d {_host(gw)} -p {proto} -m {proto} --dport 53 -j ACCEPT",
                )
    for p in policies:
        if p.internal:
            r.add("filter", "NETD-INPUT", f"-i {p.bridge} -j {_net(p, 'I')}")


def _render_nat(r: Render, policies: list[NetworkPolicy], ports: list[PortRule]) -> None:
    v = r.version
    for chain in FIXED_CHAINS["nat"]:
        r.declare("nat", chain)
    for chain in ("NETD-PREROUTING", "NETD-OUTPUT"):
        # DNS to a gateway is netd's own resolver: a container publishing host port 53 must
        # not take it over for every network (and project) of the host.
        for p in policies:
            for gw in p.gateways(v):
                for proto in ("udp", "tcp"):
                    r.add(
                        "nat", chain, f"-d {_host(gw)} -p {proto} -m {proto} --dport 53 -j RETURN"
                    )
        r.add("nat", chain, "-m addrtype --dst-type LOCAL -j NETD-DNAT")
    mine = [p for p in ports if p.version == v]
    # Ports on a given host address first: they win over the same port on any address.
    for rule in sorted(mine, key=lambda p: p.host_ip is None):
        dst = f"-d {_host(rule.host_ip)} " if rule.host_ip is not None else ""
        r.add(
            "nat",
            "NETD-DNAT",
            f"{dst}-p {rule.protocol} -m {rule.protocol} --dport {rule.host_port} "
            f"-m comment --comment netd:{rule.owner[:64]} -j DNAT --to-destination {_to(rule)}",
        )
    for p in policies:
        if p.internal:
            continue
        for net in p.subnets(v):
            # hairpin: a container reaching a published port of its own network
            r.add(
                "nat",
                "NETD-POSTROUTING",
                f"-s {net} -o {p.bridge} -m conntrack --ctstate DNAT -j MASQUERADE",
            )
        if v == 4 and p.subnets4:
            r.add("nat", "NETD-POSTROUTING", f"-s 127.0.0.0/8 -o {p.bridge} -j MASQUERADE")
        if p.nat_outbound(v):
            snat = p.snat(v)
            target = "MASQUERADE" if snat is None else f"SNAT --to-source {snat}"
            for net in p.subnets(v):
                r.add("nat", "NETD-POSTROUTING", f"-s {net} ! -o {p.bridge} -j {target}")


def build_render(state: DesiredState, version: int) -> Render:
    """netd's chains and rules for one address family (empty when there are no networks)."""
    r = Render(version)
    if state.networks:
        policies = state.policies()
        _render_filter(r, policies)
        _render_nat(r, policies, state.all_ports())
    return r


def build_restore(render: Render, existing: Existing) -> str:
    """``iptables-restore --noflush`` input converging the kernel from ``existing`` to ``render``.

    Chains netd no longer needs (a removed network's, or all when there are no networks) are
    emptied and deleted, after the jumps into them are removed.
    """
    out: list[str] = []
    for table in ("filter", "nat"):
        wanted = render.chains[table]
        stale = sorted(existing.chains[table] - set(wanted))
        out.append(f"*{table}")
        out += [f":{chain} - [0:0]" for chain in [*wanted, *stale]]
        for builtin, target in JUMPS[table].items():
            has = builtin in existing.jumps[table]
            if target in wanted and not has:
                out.append(f"-I {builtin} 1 -j {target}")
            elif target not in wanted and has:
                out.append(f"-D {builtin} -j {target}")
        for rules in wanted.values():
            out += rules
        out += [f"-X {chain}" for chain in stale]
        out.append("COMMIT")
    return "\n".join(out) + "\n"
