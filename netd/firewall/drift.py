"""Which of netd's nftables set/map elements the kernel lost, and whose they were (pure).

The firewall monitor's cheap check counts chains and rules, so it notices a flushed table or a
deleted rule within seconds; it does not read elements. Someone running
``nft delete element inet netd pub4_any { tcp . 8080 }`` leaves every rule in place and only
that published port broken. The periodic reconciliation asks the backend for its
:class:`Drift` — every element of the last applied :class:`DesiredState` that the kernel's
listing lacks (or holds with other data), grouped by owner: a network or an endpoint — and
re-adds each owner's elements through the backend.

This module compares; it does not list the tables (``nft.py`` does) nor repair anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import ruleset
from .state import DesiredState, EndpointKey


@dataclass
class Drift:
    """Elements missing from the kernel, by owner (network id, or endpoint key), as nft text.

    ``incomplete`` is set when a whole set or table is missing: that is the monitor's to repair
    (one rebuild), so no owner is listed then.
    """

    networks: dict[str, list[str]] = field(default_factory=dict)
    endpoints: dict[EndpointKey, list[str]] = field(default_factory=dict)
    incomplete: str = ""

    def __bool__(self) -> bool:
        return bool(self.networks or self.endpoints)


def _text(value: Any) -> str:
    """An element expression as canonical text; a host prefix (/32, /128) as its address."""
    if isinstance(value, dict):
        if "concat" in value:
            return " . ".join(_text(v) for v in value["concat"])
        if "prefix" in value:
            net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
            return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if "range" in value:
            low, high = value["range"]
            return f"{_text(low)}-{_text(high)}"
        if "elem" in value:
            return _text(value["elem"].get("val"))
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    return str(value)


def element_text(elem: Any) -> str:
    """``key`` or ``key : data`` of one element as listed (or as :meth:`Elem.add_json` makes)."""
    if isinstance(elem, list):  # map element: [key, data]
        return f"{_text(elem[0])} : {_text(elem[1])}"
    return _text(elem)


def listed_elements(listing: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """``{set name: element texts}`` of a libnftables ``list table`` answer (both tables)."""
    found: dict[str, set[str]] = {}
    for obj in listing:
        body = obj.get("set") or obj.get("map")
        if body is None or body.get("table") != ruleset.TABLE:
            continue
        found[body["name"]] = {element_text(e) for e in body.get("elem", [])}
    return found


def find_drift(state: DesiredState, listing: Iterable[dict[str, Any]]) -> Drift:
    """Compare ``state``'s elements with a listing of netd's tables; see :class:`Drift`."""
    found = listed_elements(listing)
    drift = Drift()
    if not state.networks:
        return drift
    absent = [name for name in ruleset.SETS if name not in found]
    if absent:
        drift.incomplete = f"sets missing: {', '.join(absent)}"
        return drift

    def lost(elems: list[ruleset.Elem]) -> list[str]:
        out = []
        for e in elems:
            text = element_text(e.add_json())
            if text not in found[e.set]:
                out.append(f"{e.set} {{ {text} }}")
        return out

    for policy in state.policies():
        gone = lost(ruleset.build_network_elements(policy))
        if gone:
            drift.networks[policy.network_id] = gone
        for ep in state.endpoints_of(policy.network_id):
            key = (ep.network_id, ep.container_id, ep.ifname)
            rules = state.endpoints[key][1]
            gone = lost(ruleset.endpoint_elements(policy, ep, rules))
            if gone:
                drift.endpoints[key] = gone
    return drift
