"""What the drivers report and what the records expect, by tag (blocking helpers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..drivers.base import Driver
from .plan import Expected, expected_from

if TYPE_CHECKING:
    from ..core.parts import Core


def inventories(drivers: dict[str, Driver]) -> dict[str, str]:
    """``{tag: ifname}`` of every driver's host-side objects (blocking: netlink)."""
    tagged: dict[str, str] = {}
    for driver in drivers.values():
        tagged.update(driver.inventory())
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
