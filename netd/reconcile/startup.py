"""Start-up: load the records, converge the kernel to them, finish interrupted operations.

Runs before the daemon serves. Order matters: orphan objects (leftovers of a crash between
"kernel object created" and "record written") go first, then every network's objects and the
whole firewall are converged, then attaches and detaches that a crash interrupted are undone or
finished (they never reached the runtime as a success, so a retried ADD starts clean), then DNS
gets the whole state, then endpoints whose namespace died while the daemon was down are reaped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import StoreCorrupt
from ..metrics import METRICS
from .inventory import expected, inventories, remove_object
from .plan import plan_orphans
from .reap import Reaper

if TYPE_CHECKING:
    from ..core.parts import Core

log = logging.getLogger("netd.service")


async def start(svc: Core, reaper: Reaper) -> None:
    """Bring ``svc`` from an empty cache to serving (see the module docstring); the caller
    marks itself ready after."""
    state = svc.state
    store = svc.store
    networks = await asyncio.to_thread(store.list_networks)
    for net in networks:
        eps = await asyncio.to_thread(store.list_endpoints, net.id)
        cursors = await asyncio.to_thread(store.get_cursors, net.id)
        state.add_network(net, eps, cursors)
    await asyncio.to_thread(remove_orphans, svc)
    for net in networks:
        await asyncio.to_thread(state.driver(net).ensure_network, net)
    await asyncio.to_thread(svc.firewalling.sync)
    for net in networks:
        for ep in list(state.endpoints[net.id].values()):
            if ep.state not in ("ready", "gone"):
                log.warning(
                    "start: removing interrupted %s %s/%s on %s",
                    "detach of" if ep.state == "deleting" else "attachment",
                    ep.container_id,
                    ep.ifname,
                    net.name,
                )
                await svc.endpoint_ops.remove(net, ep)
    await svc.publisher.publish()
    # Namespaces that died while the daemon was down hold no port or name once it serves.
    await reaper.sweep()
    await reaper.release_due()
    log.info("service ready: %d networks", len(networks))


def remove_orphans(svc: Core) -> None:
    """Delete netd-tagged objects that no record owns (leftovers of a crash); log each.

    Blocking (netlink). A brand-new database next to netd's objects in the kernel means the
    database was lost, not that the objects are orphans: deleting them would cut live
    containers off, so it refuses and says how to rebuild the state.
    """
    tagged = inventories(svc.state.drivers)
    if tagged and svc.store.fresh:
        raise StoreCorrupt(
            f"the state database was just created, but the kernel holds {len(tagged)} "
            f"netd-tagged links (e.g. {sorted(tagged.values())[:3]}): the database was "
            "probably lost. Run `netd recover` to rebuild it from the kernel (or delete "
            "those links) before starting the daemon"
        )
    for ifname, tag in plan_orphans(tagged, expected(svc)):
        log.warning("reconcile: removing %s (tag %r): no record owns it", ifname, tag)
        remove_object(svc.state.drivers, ifname)
        METRICS.reconcile_repairs.labels("orphan_link").inc()
