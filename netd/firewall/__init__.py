"""netd's firewall: NAT, isolation, internal networks and published ports.

Exports the seam (:class:`Firewall`), the factory :func:`make_firewall` that picks a backend
by name and logs the choice, the self-repair :class:`FirewallMonitor`, and :func:`show` behind
``netd firewall show``. Backends: ``nftables`` (default; tables ``inet netd`` and
``bridge netd``), ``iptables`` (chains NETD-*), ``none`` (the operator owns the firewall).
"""

from __future__ import annotations

import logging

from ..errors import ConfigError, FirewallError
from .base import Firewall, NullFirewall
from .monitor import FirewallMonitor

log = logging.getLogger(__name__)

BACKENDS = ("auto", "nftables", "iptables", "none")

__all__ = ["BACKENDS", "Firewall", "FirewallMonitor", "NullFirewall", "make_firewall", "show"]


def make_firewall(backend: str) -> Firewall:
    """The firewall backend named ``backend``: nftables, iptables, none, or auto.

    ``auto`` takes nftables when libnftables loads, else iptables when its tools exist, else
    fails: running without any firewall must be asked for explicitly (``none``).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"firewall_backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "none":
        log.info("firewall backend: none (netd adds no rules; the operator owns the firewall)")
        return NullFirewall()
    from .iptables import IptablesFirewall, iptables_available
    from .nft import NftablesFirewall

    if backend == "nftables":
        fw: Firewall = NftablesFirewall()
    elif backend == "iptables":
        fw = IptablesFirewall()
    else:
        try:
            fw = NftablesFirewall()
        except FirewallError as exc:
            if not iptables_available():
                raise FirewallError(
                    f"choosing a firewall backend: {exc}; no iptables either"
                ) from exc
            log.info("libnftables unavailable (%s): falling back to iptables", exc)
            fw = IptablesFirewall()
    log.info("firewall backend: %s (asked for %s)", fw.name, backend)
    return fw


def show(backend: str) -> str:
    """The live ruleset of netd's tables/chains for ``backend``, as text."""
    return make_firewall(backend).show()
