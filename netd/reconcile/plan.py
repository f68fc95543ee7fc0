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

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..model import Endpoint, Network

if TYPE_CHECKING:
    from ..drivers.base import Driver


@dataclass(frozen=True)
class Expected:
    """The host-side kernel objects the records call for, by tag, as the drivers name them
    (``Driver.network_tags`` / ``endpoint_tags``): what reconcile compares inventories with."""

    networks: Mapping[str, frozenset[str]]  # network id -> tags of its own objects
    endpoints: frozenset[str]  # tags of every endpoint's host-side objects

    @property
    def tags(self) -> set[str]:
        """Every expected tag."""
        out = set(self.endpoints)
        for tags in self.networks.values():
            out |= tags
        return out


def expected_from(
    networks: Iterable[Network],
    endpoints: Iterable[Endpoint],
    driver_of: Callable[[Network], Driver],
) -> Expected:
    """What ``networks`` and ``endpoints`` call for, as each network's driver names it."""
    nets = {n.id: n for n in networks}
    endpoint_tags: set[str] = set()
    for ep in endpoints:
        net = nets.get(ep.network_id)
        if net is not None:
            endpoint_tags |= driver_of(net).endpoint_tags(net, ep)
    return Expected(
        {n.id: driver_of(n).network_tags(n) for n in nets.values()}, frozenset(endpoint_tags)
    )


def plan_orphans(tagged: Mapping[str, str], expected: Expected) -> list[tuple[str, str]]:
    """``(ifname, tag)`` of tagged objects that no record owns, endpoints' before networks'."""
    want = expected.tags
    orphans = [(ifname, tag) for tag, ifname in tagged.items() if tag not in want]
    # Host veths first: deleting a bridge first would only detach them.
    return sorted(orphans, key=lambda o: (o[1].count(":") < 3, o[0]))


# --- periodic reconciliation (pure planning) ----------------------------------------------

RepairKind = Literal[
    "missing_network",
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

    Kinds: ``orphan_link`` (delete link ``ifname``), ``missing_network`` (ensure_network of
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

    Only ``ready`` endpoints not being changed by a request right now: an attach or detach in
    flight owns its endpoint. (The caller passes only endpoints of networks whose interfaces
    netd makes: an IPAM-only network's belong to another plugin.)
    """
    return ep.state == "ready" and ep.key not in inflight


def plan_links(
    tagged: Mapping[str, str], networks: Iterable[Network], expected: Expected
) -> list[Action]:
    """Orphan objects to delete (endpoints' first), then networks missing one of their objects.

    ``tagged`` is ``{tag: ifname}`` of the drivers' inventories, listed *before* the records
    were read, so an object made by an operation running meanwhile always has its record here.
    A network whose driver makes no host-side object (IPAM-only, an external driver that says
    so) expects no tag and is never planned.
    """
    actions = [
        Action("orphan_link", "", f"tag {tag!r}: no record owns it", ifname=name)
        for name, tag in plan_orphans(tagged, expected)
    ]
    for net in networks:
        missing = sorted(expected.networks.get(net.id, frozenset()) - tagged.keys())
        if missing:
            actions.append(
                Action(
                    "missing_network",
                    net.id,
                    f"{net.driver} object of network {net.name!r} is missing ({missing[0]})",
                )
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
