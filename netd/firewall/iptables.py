"""The iptables firewall backend: netd's NETD-* chains via ``iptables-restore --noflush``.

For hosts without nftables. Every change re-renders netd's chains from the desired state
(``iptables_rules.py``) and loads them with one ``iptables-restore`` and one
``ip6tables-restore`` run: each table is committed atomically, nothing outside NETD-* changes
except one jump per built-in chain. Why not python-iptables (``iptc``): it speaks only the
legacy xtables ABI, so on hosts whose ``iptables`` is iptables-nft (Debian 12's default) its
rules would be invisible to the host's tools, and it commits rule by rule; the restore tools
are what Docker and the CNI plugins rely on too. See docs/firewall.md.

It does not manage ebtables, ipset or any chain not named NETD-*.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from typing import Any

from ..errors import FirewallError, NotFound
from ..model import Endpoint, Network, PortMapping
from .drift import Drift
from .iptables_rules import Existing, build_render, build_restore, parse_save
from .localnet import enable_route_localnet
from .policy import build_policy
from .state import DesiredState, endpoint_key

log = logging.getLogger(__name__)

VARIANTS = {
    "auto": ("iptables", "ip6tables"),
    "legacy": ("iptables-legacy", "ip6tables-legacy"),
    "nft": ("iptables-nft", "ip6tables-nft"),
}


def iptables_available(variant: str = "auto") -> bool:
    """True if the restore/save tools of ``variant`` are installed."""
    return all(
        shutil.which(f"{tool}-{verb}") for tool in VARIANTS[variant] for verb in ("restore", "save")
    )


def run_tool(argv: list[str], op: str, stdin: str | None = None) -> str:
    """Run an iptables-save/-restore; its output, or FirewallError naming ``op`` and the tool."""
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"{op}: running {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise FirewallError(f"{op}: {argv[0]} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class IptablesFirewall:
    """Firewall backend on iptables/ip6tables, in chains named NETD-*."""

    name = "iptables"
    # No anti_spoof: filtering what a port sends needs ebtables or the bridge family of
    # nftables; iptables sees bridged frames only with br_netfilter, which netd does not load.
    capabilities: frozenset[str] = frozenset()

    def __init__(self, variant: str = "auto") -> None:
        if variant not in VARIANTS:
            raise FirewallError(f"iptables variant {variant!r}: expected auto, legacy or nft")
        if not iptables_available(variant):
            raise FirewallError(f"iptables ({variant}): iptables-restore/iptables-save not found")
        self._tools = dict(zip((4, 6), VARIANTS[variant], strict=True))
        self._lock = threading.RLock()
        self._state = DesiredState()

    # --- running the tools ----------------------------------------------------------------

    def _tool(self, version: int, verb: str, op: str, stdin: str | None = None) -> str:
        argv = [f"{self._tools[version]}-{verb}"]
        if verb == "restore":
            argv += ["--noflush", "--wait"]
        return run_tool(argv, op, stdin)

    def _existing(self, version: int, op: str) -> Existing:
        return parse_save(self._tool(version, "save", op))

    def _apply(self, new: DesiredState, op: str) -> None:
        for version in (4, 6):
            restore = build_restore(build_render(new, version), self._existing(version, op))
            self._tool(version, "restore", op, restore)
        self._state = new

    # --- the Firewall protocol -----------------------------------------------------------

    def ensure_network(self, network: Network, iface: str) -> None:
        """Render the network into netd's chains."""
        policy = build_policy(network, iface)
        with self._lock:
            new = self._state.copy()
            new.networks[network.id] = (network, policy)
            new = DesiredState.build(
                [(n, p.bridge) for n, p in new.networks.values()],
                [ep for ep, _ in new.endpoints.values()],
            )
            self._apply(new, f'adding iptables rules for network "{network.name}" ({iface})')
            if not policy.internal and policy.subnets4:
                enable_route_localnet(iface)

    def remove_network(self, network: Network, iface: str) -> None:
        """Drop the network and its endpoints from netd's chains (the chains go with the last)."""
        with self._lock:
            if network.id not in self._state.networks:
                return
            new = self._state.copy()
            for ep in new.endpoints_of(network.id):
                new.drop_endpoint(endpoint_key(ep))
            del new.networks[network.id]
            self._apply(new, f'removing iptables rules for network "{network.name}" ({iface})')

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Add the endpoint's DNAT rules; Conflict names a host port's holder."""
        op = f"adding iptables rules for container {endpoint.container_id} on {network.name}"
        with self._lock:
            if network.id not in self._state.networks:
                raise NotFound(f"{op}: network {network.id[:12]} has no firewall rules yet")
            rules = self._state.check_ports(endpoint)
            new = self._state.copy()
            new.put_endpoint(endpoint, rules)
            self._apply(new, op)

    def remove_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Remove the endpoint's rules; nothing to do if netd does not know it."""
        op = f"removing iptables rules for container {endpoint.container_id} on {network.name}"
        with self._lock:
            if endpoint_key(endpoint) not in self._state.endpoints:
                return
            new = self._state.copy()
            new.drop_endpoint(endpoint_key(endpoint))
            self._apply(new, op)

    def sync(self, networks: list[tuple[Network, str]], endpoints: list[Endpoint]) -> None:
        """Re-render every NETD chain from state (start-up, repair)."""
        new = DesiredState.build(networks, endpoints)
        with self._lock:
            self._apply(new, "rebuilding netd's iptables chains")
            for policy in new.policies():
                if not policy.internal and policy.subnets4:
                    enable_route_localnet(policy.bridge)

    # --- self-repair ----------------------------------------------------------------------

    def check(self) -> bool:
        """True if every jump and NETD chain is present with the rule count netd rendered."""
        problems: list[str] = []
        with self._lock:
            for version in (4, 6):
                render = build_render(self._state, version)
                found = self._existing(version, "checking netd's iptables chains")
                for table, jumps in (
                    ("filter", ("FORWARD", "INPUT")),
                    ("nat", ("PREROUTING", "OUTPUT", "POSTROUTING")),
                ):
                    if not render.chains[table]:
                        continue
                    problems += [
                        f"IPv{version} {table} {j}: jump to netd missing"
                        for j in jumps
                        if j not in found.jumps[table]
                    ]
                for chain, n in render.counts().items():
                    if found.rules.get(chain, 0) != n:
                        problems.append(
                            f"IPv{version} chain {chain} has "
                            f"{found.rules.get(chain, 0)} rules, expected {n}"
                        )
        for p in problems:
            log.warning("iptables check: %s", p)
        return not problems

    def repair(self) -> None:
        """Re-apply netd's chains from the state last applied."""
        with self._lock:
            self._apply(self._state, "repairing netd's iptables chains")
        log.warning("restored netd's iptables chains (%d networks)", len(self._state.networks))

    def drift(self) -> Drift:
        """Published ports of the state last applied that NETD-DNAT lacks, by endpoint.

        Network rules are not compared here: the monitor's per-chain rule counts already see
        one go missing; a DNAT rule is also counted, but one changed in place is not.
        """
        from .readback import parse_iptables_save

        with self._lock:
            texts = {v: self._tool(v, "save", "checking netd's DNAT rules") for v in (4, 6)}
            found = {(p.dest, p.mapping) for p in parse_iptables_save(texts, {}).ports}
            drift = Drift()
            for key, (_, rules) in sorted(self._state.endpoints.items()):
                gone = [
                    f"DNAT {r.describe()} to {r.dest}:{r.dest_port}"
                    for r in rules
                    if (r.dest, PortMapping(r.host_port, r.dest_port, r.protocol, r.host_ip))  # type: ignore[arg-type]
                    not in found
                ]
                if gone:
                    drift.endpoints[key] = gone
            return drift

    def show(self) -> str:
        """netd's live chains, as ``iptables-save`` prints them, for IPv4 and IPv6."""
        parts = []
        with self._lock:
            for version in (4, 6):
                text = self._tool(version, "save", "showing netd's iptables chains")
                keep = [
                    ln
                    for ln in text.splitlines()
                    if ln.startswith(("*", "COMMIT")) or "NETD-" in ln
                ]
                parts.append(f"# IPv{version}\n" + "\n".join(keep) + "\n")
        return "".join(parts)

    def describe(self, network: Network) -> dict[str, Any]:
        """netd's live chains and the rules that belong to ``network``, per address family.

        A rule belongs to the network when it names its bridge (``-i``/``-o``), jumps to or sits
        in one of its own chains (``NETD-I-<net12>``), or is a DNAT rule commented with one of
        its containers' ids.
        """
        with self._lock:
            policy = self._state.policy(network.id)
            bridge = policy.bridge if policy is not None else None
            owners = {f"netd:{ep.container_id[:64]}" for ep in self._state.endpoints_of(network.id)}
            own = f"-{network.id[:12]}"
            out: dict[str, Any] = {"backend": self.name, "bridge": bridge}
            for version in (4, 6):
                text = self._tool(version, "save", f'describing firewall of "{network.name}"')
                chains: list[str] = []
                rules: list[str] = []
                table = ""
                for line in text.splitlines():
                    if line.startswith("*"):
                        table = line[1:]
                    elif line.startswith(":NETD-"):
                        chains.append(f"{table} {line[1:].split()[0]}")
                    elif line.startswith("-A ") and "NETD-" in line:
                        words = line.split()
                        mine = (
                            (bridge is not None and bridge in words)
                            or any(w.startswith("NETD-") and w.endswith(own) for w in words)
                            or any(o in words for o in owners)
                        )
                        if mine:
                            rules.append(f"{table} {line}")
                out[f"ipv{version}"] = {"chains": chains, "rules": rules}
        return out
