"""The reconciler: periodic and event-driven passes that converge the kernel to the records.

Each pass gathers what the drivers report (:meth:`Driver.inventory`) and what they find when
checking endpoints, plans the repairs with the pure functions of :mod:`.plan`, and applies them
under the service's locks: links first under the global lock (no network appears or vanishes
meanwhile), then each network's endpoints under that network's lock, skipping attachments in
flight; then the firewall's lost elements, then reaped endpoints whose grace is over. Every
repair is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..errors import NetdError
from ..metrics import METRICS
from ..model import Endpoint, Network
from .inventory import expected, inventories, remove_object
from .plan import Action, needs_check, plan_endpoints, plan_firewall, plan_links
from .reap import Reaper

if TYPE_CHECKING:
    from ..core.parts import Core

log = logging.getLogger("netd.service")
CHECK_CHUNK = 8  # endpoints checked per worker-thread hop by the reconciler
CHECK_PAUSE = 3.0  # pause after each chunk, in multiples of the time it took
Problems = dict[tuple[str, str, str], list[str]]


class Reconciler:
    """Applies reconcile plans to the service's core (:class:`netd.core.parts.Core`)."""

    def __init__(self, svc: Core, reaper: Reaper) -> None:
        self.svc = svc
        self.state = svc.state
        self.reaper = reaper

    async def run(self, interval: float) -> None:
        """Reconcile every ``interval`` seconds until cancelled; a failed pass is logged."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile: pass failed; retrying in %.0f s", interval)

    async def reconcile(self, only: set[str] | None = None) -> list[Action]:
        """Compare the kernel with the records and repair it; returns the actions applied.

        ``only``: network ids to look at (a targeted pass after link events,
        :mod:`netd.link_watch`); orphan objects and the firewall are always checked.
        """
        state = self.state
        done: list[Action] = []
        async with state.global_lock:
            # Listed before the records are read, so an attach running meanwhile is never
            # taken for an orphan.
            tagged = await asyncio.to_thread(inventories, state.drivers)
            for action in plan_links(tagged, list(state.networks.values()), expected(self.svc)):
                if only is not None and action.network_id and action.network_id not in only:
                    continue
                async with state.lock(action.network_id or "-orphans"):
                    if await self._repair(action):
                        done.append(action)
        for net in list(state.networks.values()):
            if (only is not None and net.id not in only) or not state.plumbed(net):
                continue
            # Check outside the network's lock (a pass over many endpoints must not hold up
            # attaches); repair under it, only if the record is unchanged and not in flight.
            busy = set(state.inflight.get(net.id, set()))
            eps = [e for e in state.endpoints.get(net.id, {}).values() if needs_check(e, busy)]
            # A targeted pass (a link was deleted) is short and urgent: not paced.
            problems, gone = await self._check_paced(net, eps, paced=only is None)
            actions = plan_endpoints(eps, problems, gone, busy)
            if not actions:
                continue
            async with state.lock(net.id):
                if net.id not in state.networks:
                    continue  # removed meanwhile
                for action in actions:
                    if not state.still_current(action.network_id, action.endpoint):
                        continue  # changed by a request meanwhile: the next pass looks again
                    if await self._repair(action):
                        done.append(action)
        await self._finish_detaches()
        done += await self._reconcile_firewall()
        await self.reaper.release_due()
        return done

    async def _finish_detaches(self) -> None:
        """Finish detaches that tore the endpoint down but could not delete its record (the
        store failed meanwhile): the ``deleting`` records no request is working on."""
        state = self.state
        for net in list(state.networks.values()):
            finished = 0
            async with state.lock(net.id):
                busy = state.inflight.get(net.id, set())
                table = state.endpoints.get(net.id, {})
                stuck = [e for e in table.values() if e.state == "deleting" and e.key not in busy]
                for ep in stuck:
                    try:
                        await self.svc.endpoint_ops.remove(net, ep)
                    except NetdError as exc:
                        log.error("reconcile: finishing the detach of %s: %s", ep.host_ifname, exc)
                        continue
                    log.warning(
                        "reconcile: finished the detach of %s/%s from %s",
                        ep.container_id[:12],
                        ep.ifname,
                        net.name,
                    )
                    METRICS.reconcile_repairs.labels("finish_detach").inc()
                    finished += 1
            if finished:
                await self.svc.publisher.publish(net)

    async def _reconcile_firewall(self) -> list[Action]:
        """Re-add firewall elements the kernel lost (e.g. ``nft delete element``), by owner."""
        state = self.state
        drift = await asyncio.to_thread(self.svc.firewall.drift)
        eps = state.all_endpoints()
        done = []
        for action in plan_firewall(
            drift.networks, drift.endpoints, eps, set(state.networks), state.busy()
        ):
            async with state.lock(action.network_id):
                if not state.still_current(action.network_id, action.endpoint):
                    continue  # changed by a request meanwhile: the next pass looks again
                if await self._repair(action):
                    done.append(action)
        return done

    async def _check_paced(
        self, net: Network, eps: list[Endpoint], paced: bool = True
    ) -> tuple[Problems, Problems]:
        """:meth:`_check_endpoints` in chunks, busy at most 1/(1 + CHECK_PAUSE) of the time.

        Checking runs Python and netlink work that shares the GIL and the kernel's RTNL lock
        with attaches: one unbroken pass over hundreds of endpoints doubled the latency of
        every attach that overlapped it. Paced, a pass over 500 endpoints takes ~10 s of the
        30 s interval and an overlapping attach waits for one chunk at most.
        """
        problems: Problems = {}
        gone: Problems = {}
        for start in range(0, len(eps), CHECK_CHUNK):
            began = time.monotonic()
            found, lost = await asyncio.to_thread(
                self._check_endpoints, net, eps[start : start + CHECK_CHUNK]
            )
            problems.update(found)
            gone.update(lost)
            if paced and start + CHECK_CHUNK < len(eps):
                await asyncio.sleep((time.monotonic() - began) * CHECK_PAUSE)
        return problems, gone

    def _check_endpoints(self, net: Network, eps: list[Endpoint]) -> tuple[Problems, Problems]:
        """The driver's findings per endpoint; for those whose namespace path is unusable, the
        evidence that the namespace still lives (none: gone for good, see :mod:`.reap`)."""
        lost = self.reaper.unusable(eps)
        skip = {ep.key for ep in lost}
        problems: Problems = {}
        driver = self.state.driver(net)
        for ep in eps:
            if ep.key not in skip:
                key = (ep.network_id, ep.container_id, ep.ifname)
                problems[key] = driver.check_endpoint(net, ep).problems
        return problems, self.reaper.judge(lost)

    async def _repair(self, action: Action) -> bool:
        """Apply one repair, logging it; True if something was repaired (and counted)."""
        svc, state = self.svc, self.state
        ep = action.endpoint
        if action.kind == "netns_held" and ep is not None:
            self.reaper.note_held(ep, action.detail.split("; "))
            return False
        if action.kind == "netns_gone" and ep is not None:
            return await self.reaper.withdraw(state.networks[action.network_id], ep)
        try:
            if action.kind == "orphan_link":
                log.warning("reconcile: removing %s (%s)", action.ifname, action.detail)
                # In a worker thread: a netlink socket must not be opened on the event loop.
                await asyncio.to_thread(remove_object, state.drivers, action.ifname)
            elif action.kind == "missing_network":
                net = state.networks[action.network_id]
                log.warning("reconcile: re-creating the %s", action.detail)
                await asyncio.to_thread(state.driver(net).ensure_network, net)
                # A new bridge lost its per-interface settings (route_localnet): re-apply.
                await asyncio.to_thread(svc.firewalling.ensure_network, net)
            elif action.kind == "firewall_network":
                net = state.networks[action.network_id]
                log.warning("reconcile: re-adding network %s's %s", net.name, action.detail)
                await asyncio.to_thread(svc.firewalling.ensure_network, net)
            elif action.kind == "firewall_endpoint" and ep is not None:
                net = state.networks[action.network_id]
                log.warning(
                    "reconcile: re-adding %s/%s's %s",
                    ep.container_id[:12],
                    ep.ifname,
                    action.detail,
                )
                await asyncio.to_thread(svc.firewalling.add_endpoint, net, ep)
            elif action.kind == "endpoint" and ep is not None:
                await self._replumb(state.networks[action.network_id], ep, action.detail)
        except NetdError as exc:
            log.error("reconcile: repairing %s failed: %s", action.detail, exc)
            return False
        METRICS.reconcile_repairs.labels(action.kind).inc()
        return True

    async def _replumb(self, net: Network, ep: Endpoint, found: str) -> None:
        """Tear down what is left of a live endpoint and set it up again, same addresses and MAC."""
        log.warning(
            "reconcile: re-plumbing %s/%s on %s (%s) with %s",
            ep.container_id[:12],
            ep.ifname,
            net.name,
            found,
            " ".join(str(a) for a in ep.addresses),
        )
        driver = self.state.driver(net)
        for failure in await asyncio.to_thread(driver.teardown_endpoint, net, ep):
            log.error("reconcile: tearing down %s: %s", ep.host_ifname, failure)
        plumbed = await asyncio.to_thread(driver.setup_endpoint, net, ep)
        await asyncio.to_thread(self.svc.store.put_endpoint, plumbed, {})
        self.state.endpoints[net.id][ep.key] = plumbed
        # Its published ports and ICC element, explicitly (the monitor only sees whole rules).
        await asyncio.to_thread(self.svc.firewalling.add_endpoint, net, plumbed)
