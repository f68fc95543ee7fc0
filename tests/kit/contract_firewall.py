"""The firewall contract: the checks every :class:`netd.firewall.base.Firewall` must pass.

Implementations (one line each in ``SUITE``): nftables and iptables (real rules, run inside a
sandbox host namespace by tests/ns/test_contract_firewall_ns.py), the null backend and the
kit's :class:`~kit.firewalls.FakeFirewall` (in process, tests/unit/test_contract_firewall.py).

Each subject has ``dump()``: what the kernel holds, read with ``nft``/``iptables-save``
independently of the backend and normalised (no handles, sets sorted), so "idempotent" and
"leaves nothing" are judged by the kernel, not by the backend's own bookkeeping.
"""

from __future__ import annotations

import difflib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kit.contract import Impl, Skip, Suite
from kit.firewalls import FakeFirewall, fw_ensure, fw_remove, fw_sync
from kit.records import endpoint, network
from netd.errors import Conflict
from netd.firewall.base import Firewall, NullFirewall
from netd.model import PortMapping

NET = network("fw-a", ["10.77.0.0/24", "fd00:77::/64"])
INTERNAL = network("fw-b", "10.78.0.0/24", internal=True)
NOICC = network("fw-c", "10.79.0.0/24", options={"enable_icc": "false"})
WEB = endpoint(NET, "web", port_mappings=(PortMapping(8080, 80), PortMapping(5353, 53, "udp")))
DB = endpoint(NET, "db", host=3)
LONE = endpoint(NOICC, "lone", port_mappings=(PortMapping(9090, 90),))
CLASH = endpoint(NOICC, "late", host=4, port_mappings=(PortMapping(8080, 81),))


@dataclass
class FirewallSubject:
    """A backend, how to read the kernel behind it, and how to break its ruleset."""

    fw: Firewall
    dump: Callable[[], str]
    damage: Callable[[], None] | None = None  # None: nothing the backend keeps can be broken

    @property
    def filters(self) -> bool:
        """Whether the backend adds any rule (the null backend does not)."""
        return self.damage is not None

    def close(self) -> None:
        """Nothing to release: backends hold no socket between calls."""


# --- reading the kernel -----------------------------------------------------------------------


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _normal(value: Any) -> Any:
    """nft JSON without handles and with sets' elements in a stable order."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if k not in ("handle", "metainfo")}
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        return (
            sorted(items, key=json.dumps)
            if all(not isinstance(v, dict) or "rule" not in v for v in items)
            else items
        )
    return value


def nft_dump() -> str:
    """The whole nftables ruleset of this namespace, normalised."""
    listing = json.loads(_run("nft", "-j", "list", "ruleset"))["nftables"]
    return json.dumps(_normal([o for o in listing if "metainfo" not in o]), indent=1)


BUILTIN = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}


def iptables_dump() -> str:
    """Every rule and user chain of iptables-save and ip6tables-save, sorted.

    Empty tables with their built-in chains are left out: iptables-nft creates them on first
    use and never removes them; they hold nothing.
    """
    lines = [
        f"{v} {table} {ln}"
        for v, tool in (("4", "iptables-save"), ("6", "ip6tables-save"))
        for table, ln in _tables(_run(tool))
        if ln.startswith("-A ") or (ln.startswith(":") and ln[1:].split()[0] not in BUILTIN)
    ]
    return "\n".join(sorted(lines))


def _tables(save: str) -> list[tuple[str, str]]:
    """(table, line) for each line of an iptables-save listing."""
    table, out = "", []
    for ln in save.splitlines():
        if ln.startswith("*"):
            table = ln[1:]
        out.append((table, ln))
    return out


def _nftables(args: dict[str, Any]) -> FirewallSubject:
    from netd.firewall.nft import NftablesFirewall

    def damage() -> None:
        _run("nft", "flush", "table", "inet", "netd")

    return FirewallSubject(NftablesFirewall(), nft_dump, damage)


def _iptables(args: dict[str, Any]) -> FirewallSubject:
    from netd.firewall.iptables import IptablesFirewall

    def damage() -> None:
        _run("iptables", "-F", "NETD-FORWARD")

    return FirewallSubject(IptablesFirewall(), iptables_dump, damage)


def _fake(args: dict[str, Any]) -> FirewallSubject:
    fake = FakeFirewall()
    return FirewallSubject(fake, fake.show, lambda: setattr(fake, "damaged", True))


def _none(args: dict[str, Any]) -> FirewallSubject:
    return FirewallSubject(NullFirewall(), lambda: "")


# --- the checks -------------------------------------------------------------------------------


def same(now: str, expected: str, what: str) -> None:
    """Assert two dumps are equal, showing the difference."""
    if now != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), now.splitlines(), "expected", "now", lineterm=""
        )
        raise AssertionError(f"{what}:\n" + "\n".join(diff))


def healthy(s: FirewallSubject) -> None:
    """The backend says the kernel holds what it applied, element by element too."""
    assert s.fw.check() is True
    drift = s.fw.drift()
    assert not drift and not drift.incomplete, drift


def describe_names_the_backend(s: FirewallSubject) -> None:
    fw_ensure(s.fw, NET)
    for net in (NET, INTERNAL):  # known and unknown networks alike
        described = s.fw.describe(net)
        assert described["backend"] == s.fw.name, described
    assert isinstance(s.fw.show(), str)
    assert isinstance(s.fw.capabilities, frozenset)


def ensure_network_is_idempotent(s: FirewallSubject) -> None:
    empty = s.dump()
    fw_ensure(s.fw, NET)
    once = s.dump()
    fw_ensure(s.fw, NET)
    same(s.dump(), once, "the kernel differs from once")
    assert (once != empty) == s.filters, "a filtering backend adds rules for a network"
    healthy(s)


def endpoints_add_and_remove_idempotently(s: FirewallSubject) -> None:
    fw_ensure(s.fw, NET)
    base = s.dump()
    s.fw.add_endpoint(NET, WEB)
    once = s.dump()
    s.fw.add_endpoint(NET, WEB)
    same(s.dump(), once, "the kernel differs from once")
    assert (once != base) == s.filters, "published ports add rules or elements"
    healthy(s)
    s.fw.add_endpoint(NET, DB)
    s.fw.remove_endpoint(NET, DB)
    same(s.dump(), once, "the kernel differs from once")
    s.fw.remove_endpoint(NET, WEB)
    s.fw.remove_endpoint(NET, WEB)
    s.fw.remove_endpoint(NET, endpoint(NET, "never-added"))
    same(s.dump(), base, "the kernel differs from base")
    healthy(s)


def remove_network_takes_its_endpoints_and_leaves_the_rest(s: FirewallSubject) -> None:
    empty = s.dump()
    fw_remove(s.fw, NET)  # never ensured: nothing to do
    same(s.dump(), empty, "the kernel differs from empty")
    fw_ensure(s.fw, INTERNAL)
    only_internal = s.dump()
    fw_ensure(s.fw, NET)
    s.fw.add_endpoint(NET, WEB)
    s.fw.add_endpoint(NET, DB)
    fw_remove(s.fw, NET)
    same(s.dump(), only_internal, "the kernel differs from only_internal")
    fw_remove(s.fw, NET)
    same(s.dump(), only_internal, "the kernel differs from only_internal")
    healthy(s)
    fw_remove(s.fw, INTERNAL)
    same(s.dump(), empty, "removing the last network leaves nothing of netd's")


def a_taken_host_port_is_a_conflict_that_changes_nothing(s: FirewallSubject) -> None:
    if not s.filters:
        raise Skip("publishes no ports: the operator owns the firewall")
    fw_ensure(s.fw, NET)
    fw_ensure(s.fw, NOICC)
    s.fw.add_endpoint(NET, WEB)
    before = s.dump()
    try:
        s.fw.add_endpoint(NOICC, CLASH)
    except Conflict as exc:
        assert "web" in str(exc), exc
    else:
        raise AssertionError("host port 8080 published twice")
    same(s.dump(), before, "the kernel differs from before")
    healthy(s)
    s.fw.remove_endpoint(NET, WEB)  # released: the other container may have it now
    s.fw.add_endpoint(NOICC, CLASH)
    healthy(s)


def sync_rebuilds_from_state_and_drops_the_rest(s: FirewallSubject) -> None:
    nets, eps = [NET, INTERNAL, NOICC], [WEB, DB, LONE]
    empty = s.dump()
    fw_sync(s.fw, nets, eps)
    synced = s.dump()
    healthy(s)
    # the same state reached step by step holds the same rules
    fw_sync(s.fw, [], [])
    same(s.dump(), empty, "the kernel differs from empty")
    for net in nets:
        fw_ensure(s.fw, net)
    for ep in eps:
        s.fw.add_endpoint(next(n for n in nets if n.id == ep.network_id), ep)
    same(s.dump(), synced, "the kernel differs from synced")
    # a sync forgets what is not in the state
    s.fw.remove_endpoint(NET, DB)
    s.fw.add_endpoint(NOICC, endpoint(NOICC, "extra", host=7))
    fw_sync(s.fw, nets, eps)
    same(s.dump(), synced, "the kernel differs from synced")
    healthy(s)
    if s.filters:  # a state whose ports clash is refused whole
        before = s.dump()
        try:
            fw_sync(s.fw, nets, [*eps, CLASH])
        except Conflict:
            pass
        else:
            raise AssertionError("sync accepted host port 8080 twice")
        same(s.dump(), before, "the kernel differs from before")


def check_sees_damage_until_repair(s: FirewallSubject) -> None:
    if s.damage is None:
        raise Skip("keeps no ruleset that could be damaged")
    fw_sync(s.fw, [NET, NOICC], [WEB, LONE])
    synced = s.dump()
    healthy(s)
    s.damage()
    assert s.fw.check() is False, "the backend did not notice its ruleset was damaged"
    s.fw.repair()
    healthy(s)
    same(s.dump(), synced, "the kernel differs from synced")


SUITE = Suite(
    "firewall",
    [
        Impl("nftables", _nftables, kernel=True),
        Impl("iptables", _iptables, kernel=True),
        Impl("none", _none),
        Impl("fake", _fake),
    ],
    {
        f.__name__: f
        for f in (
            describe_names_the_backend,
            ensure_network_is_idempotent,
            endpoints_add_and_remove_idempotently,
            remove_network_takes_its_endpoints_and_leaves_the_rest,
            a_taken_host_port_is_a_conflict_that_changes_nothing,
            sync_rebuilds_from_state_and_drops_the_rest,
            check_sees_damage_until_repair,
        )
    },
)
