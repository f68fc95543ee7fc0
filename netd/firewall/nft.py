"""The nftables firewall backend: netd's tables kept in step with its state via libnftables.

Every change is one libnftables JSON batch, which the kernel applies atomically: a network or
an endpoint only adds or deletes set/map elements (``ruleset.py`` holds the fixed rules), and
``sync`` rebuilds both tables in one batch. The backend keeps a :class:`DesiredState` so it
can refuse a taken host port (naming the holder) and re-apply everything after someone
flushed netd's tables (``check``/``repair``, driven by :mod:`netd.firewall.monitor`).

It does not decide *when* to repair (the monitor does) nor touch any table but netd's own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..errors import FirewallError, NotFound
from ..model import Endpoint, Network
from . import ruleset
from .drift import Drift, find_drift
from .localnet import enable_route_localnet
from .policy import NetworkPolicy, build_policy
from .state import DesiredState, endpoint_key

log = logging.getLogger(__name__)


def load_nftables() -> Any:
    """A libnftables context (python3-nftables); FirewallError if the library is missing."""
    try:
        import nftables  # Debian python3-nftables, a ctypes wrapper of libnftables.so.1

        return nftables.Nftables()
    except (ImportError, OSError) as exc:
        raise FirewallError(f"loading libnftables: {exc}") from exc


def list_tables(nft: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Both of netd's tables with every element (libnftables JSON objects), and the families
    whose table exists. O(elements): for drift, describe and recover, not the monitor's check.
    """
    listing: list[dict[str, Any]] = []
    families: list[str] = []
    for family in (ruleset.INET, ruleset.BRIDGE):
        rc, out, _ = nft.json_cmd(
            {"nftables": [{"list": {"table": {"family": family, "name": ruleset.TABLE}}}]}
        )
        if rc == 0 and out:
            listing += out.get("nftables", [])
            families.append(family)
    return listing, families


def _ours(obj: dict[str, Any]) -> bool:
    """Whether a ``list ruleset`` object belongs to a table named netd (any family)."""
    body = next(iter(obj.values()), None)
    if not isinstance(body, dict):
        return False
    return (body.get("name") if "table" in obj else body.get("table")) == ruleset.TABLE


class NftablesFirewall:
    """Firewall backend on nftables (tables ``inet netd`` and ``bridge netd``)."""

    name = "nftables"
    capabilities: frozenset[str] = frozenset({"anti_spoof"})

    def __init__(self, nft: Any = None) -> None:
        self._nft = nft if nft is not None else load_nftables()
        self._lock = threading.RLock()  # libnftables contexts are not thread-safe
        self._state = DesiredState()

    # --- the transaction ------------------------------------------------------------------

    def _run(self, cmds: list[ruleset.Cmd], op: str) -> Any:
        rc, out, err = self._nft.json_cmd({"nftables": cmds})
        if rc != 0:
            raise FirewallError(f"{op}: {err.strip() or f'libnftables returned {rc}'}")
        return out

    def _commit(
        self,
        change: Callable[[DesiredState], object],
        add: list[ruleset.Elem],
        delete: list[ruleset.Elem],
        op: str,
        rebuild: bool = False,
    ) -> None:
        """Apply an element change, then record it with ``change``; rebuild when needed.

        The common path costs O(elements changed): the state is changed in place only after
        the kernel accepted. The first network, the last one's removal and a failed increment
        (someone flushed or deleted our tables) rebuild both tables in one batch instead.
        """
        if not rebuild and self._state.networks:
            try:
                self._run(ruleset.build_element_changes(add, delete), op)
            except FirewallError as exc:
                log.warning("%s; rebuilding netd's nftables tables from state", exc)
            else:
                change(self._state)
                return
        new = self._state.copy()
        change(new)
        self._run(ruleset.build_ruleset_from_state(new), op)
        self._state = new

    # --- the Firewall protocol ---------------------------------------------------------------

    def ensure_network(self, network: Network, iface: str) -> None:
        """Add the network's set elements (bridge, masquerade/SNAT, internal, DNS)."""
        policy = build_policy(network, iface)
        op = f'adding firewall rules for network "{network.name}" (bridge {iface})'
        with self._lock:
            old = self._state.policy(network.id)
            if old is not None and old != policy:
                # Options changed: endpoints' elements may change too; rebuild everything.
                nets = [
                    (n, p.bridge) for n, p in self._state.networks.values() if n.id != network.id
                ]
                new = DesiredState.build(
                    [*nets, (network, iface)], [ep for ep, _ in self._state.endpoints.values()]
                )
                self._run(ruleset.build_ruleset_from_state(new), op)
                self._state = new
            else:

                def change(state: DesiredState) -> None:
                    state.networks[network.id] = (network, policy)

                self._commit(change, ruleset.build_network_elements(policy), [], op)
            self._localnet(policy)

    def remove_network(self, network: Network, iface: str) -> None:
        """Delete the network's and its endpoints' elements (the tables go with the last one)."""
        op = f'removing firewall rules for network "{network.name}" (bridge {iface})'
        with self._lock:
            policy = self._state.policy(network.id)
            if policy is None:
                return
            gone = ruleset.build_network_elements(policy)
            eps = self._state.endpoints_of(network.id)
            for ep in eps:
                rules = self._state.endpoints[endpoint_key(ep)][1]
                gone += ruleset.endpoint_elements(policy, ep, rules)

            def change(state: DesiredState) -> None:
                for ep in eps:
                    state.drop_endpoint(endpoint_key(ep))
                del state.networks[network.id]

            last = list(self._state.networks) == [network.id]
            self._commit(change, [], gone, op, rebuild=last)

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Add the endpoint's DNAT and ICC elements; Conflict names a host port's holder."""
        op = f"adding firewall rules for container {endpoint.container_id} on {network.name}"
        with self._lock:
            policy = self._policy(network, op)
            rules = self._state.check_ports(endpoint)
            add = ruleset.endpoint_elements(policy, endpoint, rules)
            old = self._state.endpoints.get(endpoint_key(endpoint))
            delete: list[ruleset.Elem] = []
            if old is not None:
                was = ruleset.endpoint_elements(policy, old[0], old[1])
                delete = [e for e in was if e not in add]
            self._commit(lambda state: state.put_endpoint(endpoint, rules), add, delete, op)

    def remove_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Delete the endpoint's elements; nothing to do if netd does not know it."""
        op = f"removing firewall rules for container {endpoint.container_id} on {network.name}"
        with self._lock:
            policy = self._state.policy(network.id)
            old = self._state.endpoints.get(endpoint_key(endpoint))
            if policy is None or old is None:
                return
            gone = ruleset.endpoint_elements(policy, old[0], old[1])
            self._commit(lambda state: state.drop_endpoint(endpoint_key(endpoint)), [], gone, op)

    def sync(self, networks: list[tuple[Network, str]], endpoints: list[Endpoint]) -> None:
        """Rebuild both tables from state in one batch (start-up, repair)."""
        new = DesiredState.build(networks, endpoints)
        with self._lock:
            self._run(ruleset.build_ruleset_from_state(new), "rebuilding netd's nftables tables")
            self._state = new
            for policy in new.policies():
                self._localnet(policy)

    # --- self-repair -------------------------------------------------------------------------

    def check(self) -> bool:
        """True if the kernel's netd tables have every chain, rule count and network we expect."""
        with self._lock:
            problems = self._problems()
        for p in problems:
            log.warning("nftables check: %s", p)
        return not problems

    def _problems(self) -> list[str]:
        # `list ruleset` with terse output fetches no set elements (~2 ms whatever netd holds);
        # `list table` fetches them all even when terse (33 ms with 3,000 endpoints), and this
        # runs after every change event, under the lock that ADD needs.
        self._nft.set_terse_output(True)
        try:
            rc, out, _ = self._nft.json_cmd({"nftables": [{"list": {"ruleset": None}}]})
        finally:
            self._nft.set_terse_output(False)
        if not self._state.networks:
            return []
        found = [obj for obj in (out.get("nftables", []) if rc == 0 and out else []) if _ours(obj)]
        tables = {obj["table"]["family"] for obj in found if "table" in obj}
        for family in (ruleset.INET, ruleset.BRIDGE):
            if family not in tables:
                return [f"table {family} {ruleset.TABLE} is missing"]
        counts: dict[tuple[str, str], int] = {}
        chains, sets = set(), set()
        for obj in found:
            if "rule" in obj:
                key = (obj["rule"]["family"], obj["rule"]["chain"])
                counts[key] = counts.get(key, 0) + 1
            elif "chain" in obj:
                chains.add((obj["chain"]["family"], obj["chain"]["name"]))
            elif "set" in obj or "map" in obj:
                sets.add((obj.get("set") or obj["map"])["name"])
        problems = [f"set {s} is missing" for s in ruleset.SETS if s not in sets]
        for (family, chain), n in ruleset.rule_counts().items():
            if (family, chain) not in chains:
                problems.append(f"chain {family} {chain} is missing")
            elif counts.get((family, chain), 0) != n:
                problems.append(
                    f"chain {family} {chain} has {counts.get((family, chain), 0)} "
                    f"rules, expected {n}"
                )
        if not problems:
            rc, out, _ = self._nft.json_cmd(
                {
                    "nftables": [
                        {
                            "list": {
                                "set": {
                                    "family": ruleset.INET,
                                    "table": ruleset.TABLE,
                                    "name": "bridges",
                                }
                            }
                        }
                    ]
                }
            )
            elems = out["nftables"][1]["set"].get("elem", []) if rc == 0 and out else []
            if len(elems) != len(self._state.networks):
                problems.append(
                    f"set bridges has {len(elems)} elements, expected {len(self._state.networks)}"
                )
        return problems

    def repair(self) -> None:
        """Re-apply the whole ruleset from the state netd last applied."""
        with self._lock:
            self._run(ruleset.build_ruleset_from_state(self._state), "repairing netd's tables")
            for policy in self._state.policies():
                self._localnet(policy)
        log.warning(
            "restored netd's nftables tables (%d networks, %d endpoints)",
            len(self._state.networks),
            len(self._state.endpoints),
        )

    def drift(self) -> Drift:
        """Elements of the state last applied that the kernel's sets and maps lack, by owner.

        Lists both tables with their elements (O(elements): the periodic pass, not the
        monitor, asks). Read under the backend's lock, so a change in flight is never taken
        for a loss.
        """
        with self._lock:
            return find_drift(self._state, list_tables(self._nft)[0])

    def show(self) -> str:
        """The live ruleset of netd's tables, in nft syntax."""
        parts = []
        with self._lock:
            for family in (ruleset.INET, ruleset.BRIDGE):
                rc, out, _err = self._nft.cmd(f"list table {family} {ruleset.TABLE}")
                parts.append(out if rc == 0 else f"# table {family} {ruleset.TABLE}: absent\n")
        return "".join(parts)

    def describe(self, network: Network) -> dict[str, Any]:
        """netd's live chains (shared by all networks) and the elements ``network`` owns.

        Elements are attributed by their owner comment (``netd:<net12>`` or
        ``netd:<net12>:<container>``), read from the kernel, so flushed or foreign-edited sets
        show here as fewer ``elements`` than ``expected_elements``.
        """
        tag = f"netd:{network.id[:12]}"
        chains: list[dict[str, Any]] = []
        elements: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            policy = self._state.policy(network.id)
            expected = 0
            if policy is not None:
                expected = len(ruleset.build_network_elements(policy))
                for ep in self._state.endpoints_of(network.id):
                    rules = self._state.endpoints[endpoint_key(ep)][1]
                    expected += len(ruleset.endpoint_elements(policy, ep, rules))
            listing, families = list_tables(self._nft)
        tables = [f"{family} {ruleset.TABLE}" for family in families]
        counts: dict[tuple[str, str], int] = {}
        for obj in listing:
            if "rule" in obj:
                key = (obj["rule"]["family"], obj["rule"]["chain"])
                counts[key] = counts.get(key, 0) + 1
            elif "chain" in obj:
                c = obj["chain"]
                chains.append(
                    {
                        "family": c["family"],
                        "name": c["name"],
                        "type": c.get("type"),
                        "hook": c.get("hook"),
                        "priority": c.get("prio"),
                    }
                )
            elif "set" in obj or "map" in obj:
                body = obj.get("set") or obj["map"]
                for elem in body.get("elem", []):
                    owner, text = _element_text(elem)
                    if owner == tag or owner.startswith(tag + ":"):
                        item = {"element": text, "owner": owner}
                        elements.setdefault(body["name"], []).append(item)
        for chain in chains:
            chain["rules"] = counts.get((chain["family"], chain["name"]), 0)
        present = sum(len(v) for v in elements.values())
        return {
            "backend": self.name,
            "tables": tables,
            "bridge": policy.bridge if policy is not None else None,
            "chains": chains,
            "elements": elements,
            "expected_elements": expected,
            "present_elements": present,
        }

    # --- helpers -----------------------------------------------------------------------------

    def _policy(self, network: Network, op: str) -> NetworkPolicy:
        policy = self._state.policy(network.id)
        if policy is None:
            raise NotFound(f"{op}: network {network.id[:12]} has no firewall rules yet")
        return policy

    @staticmethod
    def _localnet(policy: NetworkPolicy) -> None:
        if not policy.internal and policy.subnets4:
            enable_route_localnet(policy.bridge)


def _expr_text(value: Any) -> str:
    """An nft JSON element expression as nft prints it (``br . 10.0.0.0/24``, ``tcp . 80``)."""
    if isinstance(value, dict):
        if "concat" in value:
            return " . ".join(_expr_text(v) for v in value["concat"])
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "range" in value:
            low, high = value["range"]
            return f"{_expr_text(low)}-{_expr_text(high)}"
        if "elem" in value:
            return _expr_text(value["elem"].get("val"))
    return str(value)


def _element_text(elem: Any) -> tuple[str, str]:
    """(owner comment, element text) of one listed set/map element ("" when uncommented)."""
    data = None
    if isinstance(elem, list):  # map element: [key, data]
        elem, data = elem
    owner = ""
    if isinstance(elem, dict) and "elem" in elem:
        owner = str(elem["elem"].get("comment") or "")
    text = _expr_text(elem)
    if data is not None:
        text += f" : {_expr_text(data)}"
    return owner, text
