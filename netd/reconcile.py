"""Reconciliation of the kernel against the store: find netd-tagged links no record owns.

The kernel is the truth about what exists; the store is the truth about what should. Every
bridge and host veth netd creates carries an ifalias tag (``netd.names.bridge_tag`` /
``endpoint_tag``), so after a crash between "kernel object created" and "record written" (or the
reverse on removal) the leftovers are found by tag, never by guessing from names.

``plan_orphans`` is pure; the service applies the plan with the driver's kernel helpers and logs
every repair. Live endpoints are never removed here: releasing an allocation is the runtime's
call (CNI DEL or GC).
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Endpoint, Network
from .names import bridge_tag, endpoint_tag


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
    return sorted(orphans, key=lambda o: (o[1].count(":") < 3, o[0]))
