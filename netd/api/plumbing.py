"""Read-only view of a network's plumbing for ``netd network inspect`` (the ``plumbing`` key).

Gathers what the kernel and the daemon's helpers hold *now* for one network: what its driver
reports (``Driver.describe``: for the bridge, the bridge's link state and each endpoint's host
veth), the firewall backend's tables, chains and the set/map elements (or rules) the network
owns, and the DNS records the DNS workers serve for it. Missing objects are reported as missing
(``present: false``), never repaired or raised: inspect is how an operator finds out what is
broken.

It does not change anything and does not compare with the records beyond marking what is absent
(``netd doctor`` and the reconciler judge; this only shows).
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.dns_publish import DnsSink
from ..drivers.base import Driver
from ..firewall.base import Firewall
from ..model import Endpoint, Network

log = logging.getLogger(__name__)


def describe_firewall(firewall: Firewall, network: Network) -> dict[str, Any]:
    """The backend's ``describe(network)``; its error when it fails."""
    try:
        return dict(firewall.describe(network))
    except Exception as exc:  # a broken firewall is exactly what inspect must show
        log.warning("describing the firewall of network %s: %s", network.name, exc)
        return {"backend": firewall.name, "error": str(exc)}


def dns_records(dns: DnsSink, network: Network) -> dict[str, Any] | None:
    """The records served for ``network`` (None when DNS is off or the daemon has no DNS)."""
    if not network.dns_enabled:
        return None
    result = dns.records(network.id)
    return dict(result) if result is not None else None


def plumbing(
    network: Network,
    driver: Driver,
    endpoints: list[Endpoint],
    firewall: Firewall,
    dns: DnsSink,
) -> dict[str, Any]:
    """Everything above for one network (blocking: run it in a worker thread)."""
    out = dict(driver.describe(network, endpoints))
    if driver.capabilities.firewall:
        out["firewall"] = describe_firewall(firewall, network)
    if driver.capabilities.dns != "none":
        out["dns"] = dns_records(dns, network)
    return out
