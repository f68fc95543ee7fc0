"""Reconciliation of the kernel against the store: plan the repairs, never make them.

The kernel is the truth about what exists; the store is the truth about what should. Every
bridge and host veth netd creates carries an ifalias tag (``netd.names.bridge_tag`` /
``endpoint_tag``), so after a crash between "kernel object created" and "record written" (or the
reverse on removal) the leftovers are found by tag, never by guessing from names.

``plan_orphans``, ``plan_links``, ``plan_endpoints`` and ``plan_firewall`` are pure: input the
records and what the kernel (or the firewall backend) shows, output a list of :class:`Action`. The
service gathers the inventory, applies the plan with the driver's kernel helpers under each
network's lock, and logs and counts every repair. Live endpoints are never removed here; an
endpoint whose namespace is gone for good is reaped by :mod:`netd.reap`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Literal

from .drivers.ipam import is_ipam_only
from .model import Endpoint, Network
from .names import bridge_tag, endpoint_tag, teardown_rank


def expected_tags(networks: Iterable[Network], endpoints: Iterable[Endpoint]) -> set[str]:
    """The ifalias tags of every link the records say should exist."""
    tags = {bridge_tag(n.id) for n in networks}
    tags |= {
        endpoint_tag(ep.network_id, ep.container_id, ep.ifname)
        for ep in endpoints
        if ep.host_ifname
    }
    return tags


def plan_orphans(
    tagged: dict[str, str], networks: Iterable[Network], endpoints: Iterable[Endpoint]
) -> list[tuple[str, str]]:
    """``(ifname, tag)`` of tagged links that no record owns, veths before bridges."""
    want = expected_tags(networks, endpoints)
    orphans = [(ifname, tag) for tag, ifname in tagged.items() if tag not in want]
    # Host veths first: deleting a bridge first would only detach them.
    return sorted(orphans, key=lambda o: (teardown_rank(o[1]), o[0]))


# --- periodic reconciliation (pure planning) ----------------------------------------------

RepairKind = Literal[
    "missing_bridge",
    "orphan_link",
    "endpoint",
    "netns_gone",
    "netns_held",
    "firewall_network",
    "firewall_endpoint",
]
EndpointId = tuple[str, str, str]  # (network id, container id, ifname)


@dataclass(frozen=True)
class Action:
    """One repair for the service to make.

    Kinds: ``orphan_link`` (delete link ``ifname``), ``missing_bridge`` (ensure_network of
    ``network_id``), ``endpoint`` (tear down what is left of ``endpoint`` and set it up again with
    the recorded addresses and MAC, then re-add its firewall elements), ``netns_gone`` (the
    namespace is gone for good: reap the endpoint, :mod:`netd.reap`), ``netns_held`` (its path
    is gone but the namespace lives, ``detail`` says what holds it: only logged),
    ``firewall_network`` / ``firewall_endpoint`` (re-add the network's or the endpoint's
    firewall elements the kernel lost). ``detail`` says what was found, for the log.
    """

    kind: RepairKind
    network_id: str
    detail: str
    ifname: str = ""
    endpoint: Endpoint | None = None


def endpoint_id(ep: Endpoint) -> EndpointId:
    """The key of ``ep`` across networks: (network id, container id, ifname)."""
    return (ep.network_id, ep.container_id, ep.ifname)


def needs_check(ep: Endpoint, inflight: Set[tuple[str, str]]) -> bool:
    """Whether the reconciler looks at ``ep`` at all.

    Only ``ready`` endpoints with interfaces of netd's own (not IPAM-only) and not being changed
    by a request right now: an attach or detach in flight owns its endpoint.
    """
    return ep.state == "ready" and bool(ep.host_ifname) and ep.key not in inflight


def plan_links(
    tagged: dict[str, str], networks: Iterable[Network], endpoints: Iterable[Endpoint]
) -> list[Action]:
    """Orphan links to delete (veths, then bridges), then networks whose bridge is missing.

    IPAM-only networks have no bridge of netd's: their links belong to another plugin.

    ``tagged`` is ``{ifalias tag: ifname}`` of the netd-tagged links, listed *before* the records
    were read, so a link made by an operation running meanwhile always has its record here.
    """
    networks = list(networks)
    actions = [
        Action("orphan_link", "", f"tag {tag!r}: no record owns it", ifname=name)
        for name, tag in plan_orphans(tagged, networks, endpoints)
    ]
    for net in networks:
        if bridge_tag(net.id) not in tagged and not is_ipam_only(net):
            actions.append(
                Action("missing_bridge", net.id, f"bridge of network {net.name!r} is missing")
            )
    return actions


def plan_endpoints(
    endpoints: Iterable[Endpoint],
    problems: dict[EndpointId, list[str]],
    netns_gone: Mapping[EndpointId, list[str]],
    inflight: Set[tuple[str, str]] = frozenset(),
) -> list[Action]:
    """Endpoints to re-plumb (the driver's check found problems), to reap or to report.

    ``netns_gone`` maps each endpoint whose namespace path is unusable to the evidence that its
    namespace still lives: none means gone for good (``netns_gone``, reaped), some means held
    elsewhere (``netns_held``, never repaired nor reaped).
    """
    actions = []
    for ep in endpoints:
        if not needs_check(ep, inflight):
            continue
        key = endpoint_id(ep)
        if key in netns_gone:
            held = netns_gone[key]
            kind: RepairKind = "netns_held" if held else "netns_gone"
            actions.append(Action(kind, ep.network_id, "; ".join(held) or ep.netns, endpoint=ep))
        elif problems.get(key):
            actions.append(Action("endpoint", ep.network_id, "; ".join(problems[key]), endpoint=ep))
    return actions


def plan_firewall(
    networks: dict[str, list[str]],
    endpoints: dict[EndpointId, list[str]],
    records: Iterable[Endpoint],
    known: Set[str],
    inflight: Set[tuple[str, str]] = frozenset(),
) -> list[Action]:
    """Networks and endpoints whose firewall elements the kernel lost (the backend's drift).

    ``networks``/``endpoints`` are what the backend found missing, by owner; ``known`` the ids of
    networks on record. Only ``ready`` endpoints on record and not in flight are re-added: an
    attach or detach in flight owns its elements, and an endpoint the backend still knows but
    the records do not is being removed.
    """
    actions = [
        Action("firewall_network", net_id, "firewall: " + ", ".join(missing))
        for net_id, missing in sorted(networks.items())
        if net_id in known
    ]
    for ep in records:
        missing = endpoints.get(endpoint_id(ep))
        if missing and ep.state == "ready" and ep.key not in inflight:
            actions.append(
                Action(
                    "firewall_endpoint",
                    ep.network_id,
                    "firewall: " + ", ".join(missing),
                    endpoint=ep,
                )
            )
    return actions
