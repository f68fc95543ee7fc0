"""Network drivers: the kernel plumbing of each network type, chosen by name.

``get_driver("bridge")`` is the Linux bridge + veth driver; ``get_driver("ipam")`` makes no
kernel object (IPAM-only networks, :mod:`netd.drivers.ipam`); ``get_driver("null")`` touches
nothing and records its calls (see :mod:`netd.drivers.null`); ``get_driver("macvlan")`` and
``get_driver("ipvlan")`` put containers directly on a host link's segment
(:mod:`netd.drivers.macvlan`). The Protocol every driver
implements is in :mod:`netd.drivers.base`.
"""

from __future__ import annotations

import logging

from ..errors import InvalidInput
from .base import Driver, EndpointStatus

log = logging.getLogger(__name__)

DRIVERS = ("bridge", "ipam", "null", "macvlan", "ipvlan")

__all__ = ["DRIVERS", "Driver", "EndpointStatus", "get_driver"]


def get_driver(name: str, *, allow_initial_netns: bool = False) -> Driver:
    """A new driver instance for ``name``; InvalidInput("driver", name, ...) if unknown.

    ``allow_initial_netns`` is passed to drivers that configure the host: the production daemon
    sets it from its configuration; tests (running in sandbox namespaces) never do.
    """
    if name == "bridge":
        from .bridge import BridgeDriver  # imports pyroute2; only when asked for

        log.info("network driver: bridge")
        return BridgeDriver(allow_initial_netns=allow_initial_netns)
    if name == "ipam":
        from .ipam import IpamOnlyDriver

        log.info("network driver: ipam (addresses only)")
        return IpamOnlyDriver()
    if name == "null":
        from .null import NullDriver

        log.info("network driver: null")
        return NullDriver()
    if name in ("macvlan", "ipvlan"):
        from .macvlan import IpvlanDriver, MacvlanDriver

        log.info("network driver: %s", name)
        cls = MacvlanDriver if name == "macvlan" else IpvlanDriver
        return cls(allow_initial_netns=allow_initial_netns)
    raise InvalidInput("driver", name, "unknown driver; known: " + ", ".join(DRIVERS))
