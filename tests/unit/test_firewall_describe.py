"""The firewall backends' read-only ``describe``: which live rules/elements a network owns."""

from __future__ import annotations

import threading
from typing import Any

from test_firewall_ruleset import DB, NET_A, NET_C, WEB

from netd.firewall.base import NullFirewall
from netd.firewall.iptables import IptablesFirewall
from netd.firewall.iptables_rules import Existing, build_render, build_restore
from netd.firewall.nft import _element_text
from netd.firewall.state import DesiredState


def iptables_with_saved_state() -> IptablesFirewall:
    """A backend whose iptables-save prints what netd rendered for two networks."""
    state = DesiredState.build([(NET_A, "nd-a"), (NET_C, "nd-c")], [WEB, DB])
    fw = object.__new__(IptablesFirewall)
    fw._lock = threading.RLock()
    fw._state = state

    def save(version: int, verb: str, op: str, stdin: str | None = None) -> str:
        assert verb == "save"
        return build_restore(build_render(state, version), Existing())

    fw._tool = save  # type: ignore[method-assign]
    return fw


def test_iptables_describe_keeps_only_the_networks_rules() -> None:
    out = iptables_with_saved_state().describe(NET_A)
    assert out["backend"] == "iptables" and out["bridge"] == "nd-a"
    rules4 = out["ipv4"]["rules"]
    assert rules4 and all("nd-a" in r or "netd:web" in r for r in rules4), rules4
    assert not any("nd-c" in r or "netd:db" in r for r in rules4)
    assert any("DNAT" in r and "netd:web" in r and "8080" in r for r in rules4)
    assert "filter NETD-FORWARD" in out["ipv4"]["chains"]
    other = iptables_with_saved_state().describe(NET_C)["ipv4"]["rules"]
    assert any("netd:db" in r for r in other) and not any("netd:web" in r for r in other)


def test_nft_element_text_reads_sets_and_maps() -> None:
    concat: Any = {"concat": ["nd-a", {"prefix": {"addr": "10.1.0.0", "len": 24}}]}
    assert _element_text({"elem": {"val": concat, "comment": "netd:aaaa"}}) == (
        "netd:aaaa",
        "nd-a . 10.1.0.0/24",
    )
    mapped = [{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "netd:a:web"}}, "10.1.0.2"]
    assert _element_text(mapped) == ("netd:a:web", "tcp . 8080 : 10.1.0.2")
    assert _element_text("nd-x") == ("", "nd-x")


def test_null_firewall_describes_itself() -> None:
    assert NullFirewall().describe(NET_A)["backend"] == "none"
