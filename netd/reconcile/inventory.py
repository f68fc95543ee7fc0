"""What the drivers report and what the records expect, by tag (blocking helpers)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..drivers.base import Driver
from ..errors import NetdError
from .plan import Expected, expected_from

if TYPE_CHECKING:
    from ..core.parts import Core

log = logging.getLogger("netd.service")


def inventories(drivers: dict[str, Driver], failed: set[str] | None = None) -> dict[str, str]:
    """``{tag: ifname}`` of every driver's host-side objects (blocking: netlink, plugins).

    One driver that cannot list its objects (an external plugin that hangs or crashes) does
    not stop the others: it is logged and its name added to ``failed`` (its networks are then
    left out of the plan: neither missing nor orphaned), or, without ``failed``, raised.
    """
    tagged: dict[str, str] = {}
    for name, driver in drivers.items():
        try:
            tagged.update(driver.inventory())
        except NetdError as exc:
            if failed is None:
                raise
            log.error("reconcile: listing the objects of driver %s failed: %s", name, exc)
            failed.add(name)
    return tagged


def expected(svc: Core, settled_only: bool = False) -> Expected:
    """The tags the records call for, as each network's driver names them (``settled_only``:
    leave out endpoints being attached or detached, whose links come and go by netd)."""
    state = svc.state
    eps = state.settled_endpoints() if settled_only else state.all_endpoints()
    return expected_from(state.networks.values(), eps, state.driver)


def remove_object(drivers: dict[str, Driver], ifname: str) -> bool:
    """Have the driver that owns ``ifname`` delete it (blocking); True if one did."""
    return any(driver.remove_object(ifname) for driver in drivers.values())
