"""Network drivers: the kernel plumbing of each network type, chosen by name.

``get_driver("bridge")`` is the Linux bridge + veth driver; ``get_driver("ipam")`` makes no
kernel object (IPAM-only networks, :mod:`netd.drivers.ipam`); ``get_driver("null")`` touches
nothing and records its calls (see :mod:`netd.drivers.null`); ``get_driver("macvlan")`` and
``get_driver("ipvlan")`` put containers directly on a host link's segment
(:mod:`netd.drivers.macvlan`); ``get_driver("overlay", node_address=...)`` spans the nodes of a
cluster over VXLAN (:mod:`netd.drivers.overlay`; unavailable without a node address). The
Protocol every driver implements is in :mod:`netd.drivers.base`. Any other name may be an
external driver: an executable of that name in the plugin directory
(:mod:`netd.drivers.external`, docs/plugin-contract.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidInput
from .base import Driver, EndpointStatus

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

DRIVERS = ("bridge", "ipam", "null", "macvlan", "ipvlan", "overlay")

__all__ = ["DRIVERS", "Driver", "EndpointStatus", "get_driver", "load_external_drivers"]


def get_driver(
    name: str,
    *,
    allow_initial_netns: bool = False,
    plugin_dir: Path | None = None,
    node_address: str | None = None,
) -> Driver:
    """A new driver instance for ``name``; InvalidInput("driver", name, ...) if unknown.

    ``allow_initial_netns`` is passed to drivers that configure the host: the production daemon
    sets it from its configuration; tests (running in sandbox namespaces) never do.
    ``plugin_dir``: where a name that is no built-in driver is looked up as a plugin.
    ``node_address``: this node's underlay IPv4 address (``[cluster] node_address``), for
    the overlay driver; None leaves it unavailable ("no cluster configured").
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
    if name == "overlay":
        from .overlay import OverlayDriver

        log.info("network driver: overlay (node address %s)", node_address or "none")
        return OverlayDriver(node_address=node_address, allow_initial_netns=allow_initial_netns)
    if plugin_dir is not None and name not in DRIVERS:
        from .external import ExternalDriver, check_driver_name, unusable

        path = plugin_dir / check_driver_name(name)  # a plain file name: no path in it
        if path.exists():
            reason = unusable(path)
            if reason:
                raise InvalidInput("driver", name, f"plugin {path} refused: {reason}")
            return ExternalDriver(path)
    raise InvalidInput("driver", name, "unknown driver; known: " + ", ".join(DRIVERS))


def load_external_drivers(config: Config, *, reserved: Iterable[str] = ()) -> dict[str, Driver]:
    """The plugins of ``config.driver_plugin_dir`` by name, never taking a built-in name
    (:data:`DRIVERS`, ``reserved``); each refused or broken plugin is logged and skipped."""
    from .external import load_external_drivers as load

    found = load(
        config.driver_plugin_dir,
        reserved={*DRIVERS, *reserved},
        timeout=config.driver_plugin_timeout,
        setup_timeout=config.driver_plugin_setup_timeout,
    )
    return dict(found)
