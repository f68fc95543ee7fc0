"""The daemon's operations: create/remove networks, attach/detach/check/gc endpoints.

This is the one place where the seams meet. Each operation validates everything first, then
applies its steps in order while keeping an undo list, and on failure undoes in reverse
(STYLE.md, after netavark's setup.rs). State changes are serialised per network (one asyncio
lock per network id) so unrelated networks never wait on each other; creating and removing
networks takes a global lock because names and subnets are global. Blocking work (SQLite,
netlink, libnftables) runs in worker threads.

What it does not do: parse HTTP or CNI (``netd.api``, ``netd.cni.handler``), or talk to the kernel
itself (drivers, firewall, DNS do).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, Protocol, TypeVar

from . import faults
from .attachments import existing_connection
from .drivers.base import Driver
from .drivers.ipam import is_ipam_only, refuse_plumbing
from .errors import (
    Conflict,
    InvalidInput,
    KernelError,
    NetdError,
    NotFound,
    StoreCorrupt,
    StoreError,
    Unavailable,
)
from .firewall.base import Firewall
from .firewall.policy import check_backend_supports, check_port_mappings
from .ipam.allocator import NetworkAllocator
from .ipam.subnets import DefaultPool
from .metrics import METRICS
from .model import (
    AttachRequest,
    Caller,
    Endpoint,
    IPAddress,
    IPNetwork,
    Network,
    NetworkSpec,
    PortMapping,
)
from .names import bridge_name, check_container_id, check_ifname, check_network_name, host_veth_name
from .reap import DEFAULT_GRACE, Reaper
from .reconcile import (
    Action,
    needs_check,
    plan_endpoints,
    plan_firewall,
    plan_links,
    plan_orphans,
)
from .spec import build_network
from .store.base import Store
from .store.health import Prober

log = logging.getLogger("netd.service")
T = TypeVar("T")
CHECK_CHUNK = 8  # endpoints checked per worker-thread hop by the reconciler
CHECK_PAUSE = 3.0  # pause after each chunk, in multiples of the time it took


class DnsSink(Protocol):
    """What the service needs from DNS: the desired record state, pushed after each change."""

    def set_state(self, networks: list[tuple[Network, list[Endpoint]]]) -> None:
        """Replace the served records with this state (start-up)."""
        ...

    def update_network(self, network: Network, endpoints: list[Endpoint]) -> None:
        """Replace one network's records; others are untouched."""
        ...

    def remove_network(self, network_id: str) -> None:
        """Stop serving one network."""
        ...


class NullDns:
    """DNS disabled: records go nowhere."""

    def set_state(self, networks: list[tuple[Network, list[Endpoint]]]) -> None:
        """Nothing to serve."""

    def update_network(self, network: Network, endpoints: list[Endpoint]) -> None:
        """Nothing to serve."""

    def remove_network(self, network_id: str) -> None:
        """Nothing to serve."""


class Undo:
    """A stack of compensating actions, run in reverse on failure (best effort, all of them)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def push(self, what: str, step: Callable[[], Awaitable[Any]]) -> None:
        """Remember how to undo ``what``."""
        self._steps.append((what, step))

    async def run(self) -> None:
        """Undo everything pushed so far, newest first; log and carry on past failures."""
        while self._steps:
            what, step = self._steps.pop()
            try:
                await step()
            except Exception:
                log.exception("rollback: undoing %s failed", what)


def _undo_step(what: str, step: Callable[..., Any], *args: Any) -> None:
    """Run one compensating action in this thread; log, never raise, past its failure."""
    try:
        failures = step(*args)
    except Exception:
        log.exception("rollback: undoing %s failed", what)
        return
    for failure in failures or ():
        log.error("rollback: undoing %s: %s", what, failure)


async def _finish_in_thread(fn: Callable[..., T], undo: Callable[[T], Any], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; a cancelled caller still waits for it, then undoes it.

    A thread cannot be interrupted: returning at once would let the caller's rollback run while
    the thread is still creating what it is rolling back, and leave behind what it created.
    """
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        if not work.cancelled() and work.exception() is None:
            await asyncio.to_thread(undo, work.result())
        raise


def match_network(networks: Iterable[Network], name_or_id: str) -> Network:
    """The network called ``name_or_id``, with that full id, or the only one whose id starts
    with it (≥ 3 characters, as docker accepts); NotFound otherwise."""
    candidates = list(networks)
    for net in candidates:
        if name_or_id in (net.name, net.id):
            return net
    if len(name_or_id) >= 3:
        hits = [n for n in candidates if n.id.startswith(name_or_id)]
        if len(hits) == 1:
            return hits[0]
    raise NotFound(f"network {name_or_id!r} not found", field="network", value=name_or_id)


class Service:
    """The daemon's operations over store, IPAM, driver, firewall and DNS."""

    def __init__(
        self,
        *,
        store: Store,
        drivers: dict[str, Driver],
        firewall: Firewall,
        dns: DnsSink | None = None,
        pools: Iterable[DefaultPool] = (),
        ula: ipaddress.IPv6Network,
        host_routes: Callable[[], list[IPNetwork]] = list,
        dns_domain: str = "dns.netd",
        validate_netns: Callable[[str, int], None] = lambda path, inode: None,
        reap_grace: float = DEFAULT_GRACE,
        check_publish: Callable[
            [tuple[PortMapping, ...], frozenset[tuple[IPAddress, int]]], None
        ] = lambda ports, exempt: None,
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.firewall = firewall
        self.dns: DnsSink = dns or NullDns()
        self.pools = tuple(pools)
        self.ula = ula
        self.host_routes = host_routes
        self.dns_domain = dns_domain
        self.validate_netns = validate_netns
        # Refuses ports a host socket holds (security.hostports); a no-op in unit tests.
        self.check_publish = check_publish
        self.ready = False
        self._networks: dict[str, Network] = {}  # by id
        self._endpoints: dict[str, dict[tuple[str, str], Endpoint]] = {}  # net id → key → ep
        self._ipam: dict[str, NetworkAllocator] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._global = asyncio.Lock()
        self._dns_lock = asyncio.Lock()
        self._inflight: dict[str, set[tuple[str, str]]] = {}  # net id → keys being changed
        self.reaper = Reaper(self, reap_grace)  # endpoints whose namespace is gone for good
        self.store_health = Prober(store.probe)  # await it: the store's health, probed now

    # --- start-up -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load state, converge the kernel to it, and finish interrupted attaches."""
        networks = await asyncio.to_thread(self.store.list_networks)
        for net in networks:
            eps = await asyncio.to_thread(self.store.list_endpoints, net.id)
            cursors = await asyncio.to_thread(self.store.get_cursors, net.id)
            self._networks[net.id] = net
            self._endpoints[net.id] = {ep.key: ep for ep in eps}
            taken = [a.ip for ep in eps for a in ep.addresses]
            self._ipam[net.id] = NetworkAllocator(net, taken, cursors)
        await asyncio.to_thread(self._remove_orphans)
        for net in networks:
            await asyncio.to_thread(self._driver(net).ensure_network, net)
        await self._sync_firewall()
        # An attach that was interrupted (crash between record and plumbing) never reached the
        # runtime as a success: undo it so a retried ADD starts clean.
        for net in networks:
            for ep in list(self._endpoints[net.id].values()):
                if ep.state not in ("ready", "gone"):
                    log.warning(
                        "start: removing interrupted %s %s/%s on %s",
                        "detach of" if ep.state == "deleting" else "attachment",
                        ep.container_id,
                        ep.ifname,
                        net.name,
                    )
                    await self._remove_endpoint(net, ep)
        await self._publish_dns()
        # Namespaces that died while the daemon was down hold no port or name once it serves.
        await self.reaper.sweep()
        await self.reaper.release_due()
        self.ready = True
        log.info("service ready: %d networks", len(networks))

    def _remove_orphans(self) -> None:
        """Delete netd-tagged links that no record owns (leftovers of a crash); log each."""
        eps = [ep for table in self._endpoints.values() for ep in table.values()]
        for driver in self.drivers.values():
            list_tagged = getattr(driver, "list_tagged_links", None)
            remove = getattr(driver, "remove_link", None)
            if list_tagged is None or remove is None:
                continue
            tagged = list_tagged()
            if tagged and getattr(self.store, "fresh", False):
                # A brand-new database next to netd's objects in the kernel means the database
                # was lost, not that the objects are orphans: deleting them would cut live
                # containers off. Refuse, and say how to rebuild the state.
                raise StoreCorrupt(
                    f"the state database was just created, but the kernel holds {len(tagged)} "
                    f"netd-tagged links (e.g. {sorted(tagged.values())[:3]}): the database was "
                    "probably lost. Run `netd recover` to rebuild it from the kernel (or delete "
                    "those links) before starting the daemon"
                )
            for ifname, tag in plan_orphans(tagged, self._networks.values(), eps):
                log.warning("reconcile: removing %s (tag %r): no record owns it", ifname, tag)
                remove(ifname)
                METRICS.reconcile_repairs.labels("orphan_link").inc()

    # --- periodic reconciliation -------------------------------------------------------------

    async def run_reconciler(self, interval: float) -> None:
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
        :mod:`netd.link_watch`); orphan links and the firewall are always checked.

        Links first, under the global lock (no network appears or vanishes meanwhile; the links
        are listed before the records are read, so an attach running meanwhile is never taken
        for an orphan); then each network's endpoints under that network's lock, skipping
        attachments in flight. Pure planning is in :mod:`netd.reconcile`.
        """
        done: list[Action] = []
        async with self._global:
            tagged = await asyncio.to_thread(self._tagged_links)
            eps = [ep for table in self._endpoints.values() for ep in table.values()]
            for action in plan_links(tagged, list(self._networks.values()), eps):
                if only is not None and action.network_id and action.network_id not in only:
                    continue
                async with self._lock(action.network_id or "-orphans"):
                    if await self._repair(action):
                        done.append(action)
        for net in list(self._networks.values()):
            if only is not None and net.id not in only:
                continue
            # Check outside the network's lock (a pass over many endpoints must not hold up
            # attaches); repair under it, only if the record is unchanged and not in flight.
            busy = set(self._inflight.get(net.id, set()))
            eps = [e for e in self._endpoints.get(net.id, {}).values() if needs_check(e, busy)]
            # A targeted pass (a link was deleted) is short and urgent: not paced.
            problems, gone = await self._check_paced(net, eps, paced=only is None)
            actions = plan_endpoints(eps, problems, gone, busy)
            if not actions:
                continue
            async with self._lock(net.id):
                if net.id not in self._networks:
                    continue  # removed meanwhile
                for action in actions:
                    if not self._still_current(action):
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
        for net in list(self._networks.values()):
            finished = 0
            async with self._lock(net.id):
                busy = self._inflight.get(net.id, set())
                table = self._endpoints.get(net.id, {})
                stuck = [e for e in table.values() if e.state == "deleting" and e.key not in busy]
                for ep in stuck:
                    try:
                        await self._remove_endpoint(net, ep)
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
                await self._publish_dns(net)

    async def _reconcile_firewall(self) -> list[Action]:
        """Re-add firewall elements the kernel lost (e.g. ``nft delete element``), by owner."""
        drift = await asyncio.to_thread(self.firewall.drift)
        eps = [ep for table in self._endpoints.values() for ep in table.values()]
        busy = {key for keys in self._inflight.values() for key in keys}
        done = []
        for action in plan_firewall(
            drift.networks, drift.endpoints, eps, set(self._networks), busy
        ):
            async with self._lock(action.network_id):
                if not self._still_current(action):
                    continue  # changed by a request meanwhile: the next pass looks again
                if await self._repair(action):
                    done.append(action)
        return done

    def _still_current(self, action: Action) -> bool:
        """Whether an action planned outside the network's lock still applies (lock held):
        its network is on record and its endpoint is the same record, not in flight."""
        if action.network_id not in self._networks:
            return False
        ep = action.endpoint
        if ep is None:
            return True
        return self._endpoints[action.network_id].get(ep.key) is ep and ep.key not in (
            self._inflight.get(action.network_id, set())
        )

    def _tagged_links(self) -> dict[str, str]:
        tagged: dict[str, str] = {}
        for driver in self.drivers.values():
            list_tagged = getattr(driver, "list_tagged_links", None)
            if list_tagged is not None:
                tagged.update(list_tagged())
        return tagged

    async def _check_paced(
        self, net: Network, eps: list[Endpoint], paced: bool = True
    ) -> tuple[dict[tuple[str, str, str], list[str]], dict[tuple[str, str, str], list[str]]]:
        """:meth:`_check_endpoints` in chunks, busy at most 1/(1 + CHECK_PAUSE) of the time.

        Checking runs Python and netlink work that shares the GIL and the kernel's RTNL lock
        with attaches: one unbroken pass over hundreds of endpoints doubled the latency of
        every attach that overlapped it. Paced, a pass over 500 endpoints takes ~10 s of the
        30 s interval and an overlapping attach waits for one chunk at most.
        """
        problems: dict[tuple[str, str, str], list[str]] = {}
        gone: dict[tuple[str, str, str], list[str]] = {}
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

    def _check_endpoints(
        self, net: Network, eps: list[Endpoint]
    ) -> tuple[dict[tuple[str, str, str], list[str]], dict[tuple[str, str, str], list[str]]]:
        """The driver's findings per endpoint; for those whose namespace path is unusable, the
        evidence that the namespace still lives (none: gone for good, see :mod:`netd.reap`)."""
        lost = self.reaper.unusable(eps)
        skip = {ep.key for ep in lost}
        problems: dict[tuple[str, str, str], list[str]] = {}
        for ep in eps:
            if ep.key not in skip:
                key = (ep.network_id, ep.container_id, ep.ifname)
                problems[key] = self._driver(net).check_endpoint(net, ep).problems
        return problems, self.reaper.judge(lost)

    async def _repair(self, action: Action) -> bool:
        """Apply one repair, logging it; True if something was repaired (and counted)."""
        ep = action.endpoint
        if action.kind == "netns_held" and ep is not None:
            self.reaper.note_held(ep, action.detail.split("; "))
            return False
        if action.kind == "netns_gone" and ep is not None:
            return await self.reaper.withdraw(self._networks[action.network_id], ep)
        try:
            if action.kind == "orphan_link":
                log.warning("reconcile: removing %s (%s)", action.ifname, action.detail)
                for driver in self.drivers.values():
                    remove = getattr(driver, "remove_link", None)
                    # In a worker thread: a netlink socket must not be opened on the event loop.
                    if remove is not None and await asyncio.to_thread(remove, action.ifname):
                        break
            elif action.kind == "missing_bridge":
                net = self._networks[action.network_id]
                log.warning("reconcile: re-creating the %s", action.detail)
                await asyncio.to_thread(self._driver(net).ensure_network, net)
                # A new bridge lost its per-interface settings (route_localnet): re-apply.
                await asyncio.to_thread(self.firewall.ensure_network, net, self.bridge_for(net))
            elif action.kind == "firewall_network":
                net = self._networks[action.network_id]
                log.warning("reconcile: re-adding network %s's %s", net.name, action.detail)
                await asyncio.to_thread(self.firewall.ensure_network, net, self.bridge_for(net))
            elif action.kind == "firewall_endpoint" and ep is not None:
                net = self._networks[action.network_id]
                log.warning(
                    "reconcile: re-adding %s/%s's %s",
                    ep.container_id[:12],
                    ep.ifname,
                    action.detail,
                )
                await asyncio.to_thread(self.firewall.add_endpoint, net, ep)
            elif action.kind == "endpoint" and ep is not None:
                await self._replumb(self._networks[action.network_id], ep, action.detail)
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
        driver = self._driver(net)
        for failure in await asyncio.to_thread(driver.teardown_endpoint, net, ep):
            log.error("reconcile: tearing down %s: %s", ep.host_ifname, failure)
        plumbed = await asyncio.to_thread(driver.setup_endpoint, net, ep)
        await asyncio.to_thread(self.store.put_endpoint, plumbed, {})
        self._endpoints[net.id][ep.key] = plumbed
        # Its published ports and ICC element, explicitly (the monitor only sees whole rules).
        await asyncio.to_thread(self.firewall.add_endpoint, net, plumbed)

    async def _sync_firewall(self) -> None:
        # IPAM-only networks have no firewall state: their links are another plugin's.
        plumbed = [n for n in self._networks.values() if not is_ipam_only(n)]
        nets = [(n, self.bridge_for(n)) for n in plumbed]
        eps = [ep for n in plumbed for ep in self._endpoints.get(n.id, {}).values()]
        live = [ep for ep in eps if ep.state != "gone"]  # reaped: its ports stay withdrawn
        await asyncio.to_thread(self.firewall.sync, nets, live)

    # --- lookups ---------------------------------------------------------------------------

    def _driver(self, network: Network) -> Driver:
        return self.drivers[network.driver]

    def _lock(self, network_id: str) -> asyncio.Lock:
        return self._locks.setdefault(network_id, asyncio.Lock())

    def find_network(self, name_or_id: str) -> Network:
        """A network by name, full id or unique id prefix (≥ 3 chars, as docker accepts)."""
        return match_network(self._networks.values(), name_or_id)

    def list_networks(self) -> list[Network]:
        """All networks by creation time."""
        return sorted(self._networks.values(), key=lambda n: n.created)

    def settled_endpoints(self) -> list[Endpoint]:
        """Ready endpoints no request is changing: those whose links must exist right now."""
        return [
            ep
            for net_id, table in self._endpoints.items()
            for ep in table.values()
            if needs_check(ep, self._inflight.get(net_id, set()))
        ]

    def endpoints(self, network: Network) -> list[Endpoint]:
        """The network's endpoints, oldest first."""
        return sorted(self._endpoints.get(network.id, {}).values(), key=lambda e: e.created)

    def bridge_for(self, network: Network) -> str:
        """The bridge interface name of a network ("" for an IPAM-only network: none)."""
        if is_ipam_only(network):
            return ""
        return network.options.get("bridge") or bridge_name(network.id)

    def dns_for(self, network: Network) -> dict[str, list[str]]:
        """What a container on ``network`` should put in resolv.conf."""
        if not network.dns_enabled:
            return {"nameservers": [], "search": []}
        servers = [str(s.gateway) for s in network.subnets if s.gateway is not None]
        return {"nameservers": servers, "search": [self.dns_domain]}

    def check_netns(self, path: str) -> None:
        """CniBackend: InvalidInput unless ``path`` is a network namespace netd may use."""
        self.validate_netns(path, 0)

    def utilisation(self, network: Network) -> dict[str, tuple[int, int]]:
        """IPAM use per subnet: (used, size)."""
        return self._ipam[network.id].utilisation()

    def _own_dns(self) -> frozenset[tuple[IPAddress, int]]:
        """(gateway, 53) of every network netd plumbs: its own DNS, which the firewall never
        DNATs, so a host socket there does not make a published port 53 a takeover."""
        return frozenset(
            (s.gateway, 53)
            for n in self._networks.values()
            if not is_ipam_only(n)
            for s in n.subnets
            if s.gateway is not None
        )

    def _resolvable(self, network: Network) -> list[Endpoint]:
        """The endpoints whose names DNS serves: all but those being detached and those reaped
        (namespace gone for good)."""
        return [e for e in self.endpoints(network) if e.state not in ("deleting", "gone")]

    async def _publish_dns(self, network: Network | None = None, *, removed: bool = False) -> None:
        """Push records to DNS off the event loop, one publication at a time.

        With ``network``, only that network is sent (cost flat in the number of containers
        elsewhere); without, the whole state (start-up). The snapshot is taken after acquiring
        the lock, so a publication carries every change made before it and an older snapshot
        never overwrites a newer one.
        """
        async with self._dns_lock:
            try:
                if network is None:
                    state = [(n, self._resolvable(n)) for n in self.list_networks()]
                    await asyncio.to_thread(self.dns.set_state, state)
                elif removed:
                    await asyncio.to_thread(self.dns.remove_network, network.id)
                else:
                    eps = self._resolvable(network)
                    await asyncio.to_thread(self.dns.update_network, network, eps)
            except Exception:  # DNS trouble must never fail a network operation
                log.exception("pushing DNS records failed")

    # --- networks --------------------------------------------------------------------------

    async def create_network(
        self,
        spec: NetworkSpec,
        caller: Caller | None = None,
        *,
        admit: Callable[[Network, list[Network], list[IPNetwork]], None] | None = None,
    ) -> Network:
        """Validate and create a network: bridge, firewall, record.

        ``admit(network, existing, host_routes)`` may refuse the validated network by raising;
        it runs under the global lock before any kernel work (rootless quotas use it, so two
        parallel creates cannot both squeeze under a quota).
        """
        if spec.driver not in self.drivers:
            raise InvalidInput(
                "driver", spec.driver, f"unknown driver; available: {', '.join(self.drivers)}"
            )
        driver = self.drivers[spec.driver]
        async with self._global:
            routes = await asyncio.to_thread(self.host_routes)
            net = build_network(
                spec,
                existing=list(self._networks.values()),
                host_routes=routes,
                pools=self.pools,
                ula=self.ula,
                validate_options=driver.validate_options,
                owner_uid=caller.uid if caller else 0,
            )
            if admit is not None:
                admit(net, list(self._networks.values()), routes)
            check_backend_supports(net, self.firewall.name, self.firewall.capabilities)
            bridge = self.bridge_for(net)
            for other in self._networks.values():
                if bridge and self.bridge_for(other) == bridge:
                    raise Conflict(
                        f"bridge {bridge!r} is already used by network {other.name!r}",
                        field="options.bridge",
                        value=bridge,
                    )
            undo = Undo()
            try:
                await asyncio.to_thread(driver.ensure_network, net)
                undo.push("bridge", lambda: asyncio.to_thread(driver.teardown_network, net))
                faults.point("service.network_plumbed")
                if not is_ipam_only(net):
                    await asyncio.to_thread(self.firewall.ensure_network, net, bridge)
                    undo.push(
                        "firewall",
                        lambda: asyncio.to_thread(self.firewall.remove_network, net, bridge),
                    )
                await asyncio.to_thread(self.store.create_network, net)
            except BaseException:
                await undo.run()
                raise
            self._networks[net.id] = net
            self._endpoints[net.id] = {}
            self._ipam[net.id] = NetworkAllocator(net, [], {})
        log.info(
            "created network %s (%s) %s",
            net.name,
            net.short_id,
            ", ".join(str(s.subnet) for s in net.subnets),
        )
        await self._publish_dns(net)
        return net

    async def ensure_network(self, spec: NetworkSpec) -> Network:
        """Return the named network, creating it from ``spec`` when it does not exist."""
        name = check_network_name(spec.name)
        try:
            return self.find_network(name)
        except NotFound:
            pass
        try:
            return await self.create_network(spec)
        except Conflict:
            # A parallel ADD created it first: that is the network we want.
            return self.find_network(name)

    async def remove_network(self, name: str) -> Network:
        """Remove a network without endpoints (Docker refuses while endpoints are active)."""
        async with self._global:
            net = self.find_network(name)
            async with self._lock(net.id):
                for dead in [
                    e for e in self._endpoints.get(net.id, {}).values() if e.state == "gone"
                ]:
                    await self._remove_endpoint(net, dead)  # reaped: only its address was left
                eps = self._endpoints.get(net.id, {})
                if eps:
                    ids = ", ".join(sorted({e.container_id[:12] for e in eps.values()}))
                    raise Conflict(
                        f"network {net.name!r} has active endpoints ({ids}); disconnect them first",
                        field="network",
                        value=net.name,
                    )
                await asyncio.to_thread(self.store.delete_network, net.id)
                faults.point("service.network_unrecorded")
                del self._networks[net.id]
                self._endpoints.pop(net.id, None)
                self._ipam.pop(net.id, None)
                failures: list[str] = []
                try:
                    if not is_ipam_only(net):
                        bridge = self.bridge_for(net)
                        await asyncio.to_thread(self.firewall.remove_network, net, bridge)
                except NetdError as exc:
                    failures.append(str(exc))
                failures += await asyncio.to_thread(self._driver(net).teardown_network, net)
                for failure in failures:
                    log.error("removing network %s: %s", net.name, failure)
        self._locks.pop(net.id, None)
        log.info("removed network %s (%s)", net.name, net.short_id)
        await self._publish_dns(net, removed=True)
        return net

    async def prune(self, among: Iterable[Network] | None = None) -> list[str]:
        """Remove every network (of ``among``, default all) without endpoints; their names."""
        removed = []
        for net in self.list_networks() if among is None else among:
            if not self._endpoints.get(net.id):
                try:
                    await self.remove_network(net.id)
                    removed.append(net.name)
                except (Conflict, NotFound):
                    continue  # gained an endpoint or vanished meanwhile
        return removed

    # --- endpoints -------------------------------------------------------------------------

    async def get_network(self, name: str) -> Network:
        """CniBackend: a network by name."""
        return self.find_network(name)

    async def status(self) -> None:
        """CniBackend: Unavailable until start-up has finished; StoreError while the state
        store cannot write (probed now), since no ADD or DEL could be recorded."""
        if not self.ready:
            raise Unavailable("netd is starting; try again")
        health = await self.store_health()
        if not health.ok:
            raise StoreError(f"the state store cannot write: {health.reason}")

    def _busy(self, net: Network, key: tuple[str, str]) -> None:
        """Unavailable (CNI: try again) while another request changes this attachment."""
        if key in self._inflight.setdefault(net.id, set()):
            raise Unavailable(
                f"attachment {key[0]!r}/{key[1]!r} on network {net.name!r} is being changed by "
                "another request; try again"
            )

    async def attach(
        self, req: AttachRequest, *, plumb: bool = True, caller: Caller | None = None
    ) -> tuple[Network, Endpoint]:
        """Allocate addresses, plumb the interface, add firewall elements, record; or nothing.

        The network's lock covers only the bookkeeping (IPAM, the record); the kernel and
        firewall work runs outside it, so attaches to one network overlap their netlink waits.
        The attachment is marked in flight meanwhile: a concurrent request for the same
        (container, interface) gets Unavailable rather than racing it.
        """
        net = self.find_network(req.network)
        cid = check_container_id(req.container_id)
        ifname = check_ifname(req.ifname)
        check_port_mappings(req.port_mappings)  # ::1: before anything changes, any backend
        if plumb:
            if is_ipam_only(net):
                raise refuse_plumbing(net)
            self.validate_netns(req.netns, req.netns_inode)
            if req.port_mappings:  # reads /proc/net tables: off the event loop
                await asyncio.to_thread(self.check_publish, req.port_mappings, self._own_dns())
        key = (cid, ifname)
        async with self._lock(net.id):
            if net.id not in self._networks:
                raise NotFound(
                    f"network {req.network!r} not found", field="network", value=req.network
                )
            self._busy(net, key)
            # `netd network connect` twice: refused, or the same endpoint for a retry.
            same = existing_connection(net, self._endpoints[net.id].values(), req, cid, ifname)
            if same is not None:
                return net, same
            existing = self._endpoints[net.id].get(key)
            if existing is not None:
                if existing.state == "ready" and not plumb:
                    return net, existing  # IPAM-only ADD is idempotent per (id, ifname)
                if existing.state == "ready":
                    raise Conflict(
                        f"container {cid!r} is already attached to network {net.name!r} "
                        f"as {ifname!r}",
                        field="container_id",
                        value=cid,
                    )
                await self._remove_endpoint(net, existing)  # leftover of an interrupted attach
            ep = await self._reserve(net, req, cid, ifname, plumb, caller)
            self._inflight[net.id].add(key)
        # The name resolves from the moment its addresses are recorded: the DNS worker's round
        # trip overlaps the kernel work instead of following it (the container's processes do
        # not run before ADD returns, so nobody can notice the few milliseconds' lead).
        published = asyncio.ensure_future(self._publish_dns(net))
        try:
            faults.point("service.recorded")
            if plumb:
                ep = await _finish_in_thread(
                    self._plumb_and_record, partial(self._unplumb, net), net, ep
                )
            else:
                ep = dataclasses.replace(ep, state="ready")
                await asyncio.to_thread(self.store.put_endpoint, ep, {})
            async with self._lock(net.id):
                self._endpoints[net.id][key] = ep
        except BaseException:
            try:
                async with self._lock(net.id):
                    await self._forget(net, ep)
            finally:
                await asyncio.shield(published)
                await self._publish_dns(net)  # withdraw the name (whatever _forget managed)
            raise
        finally:
            self._inflight[net.id].discard(key)
        await published
        log.info(
            "attached %s/%s to %s: %s",
            cid[:12],
            ifname,
            net.name,
            " ".join(str(a) for a in ep.addresses),
        )
        return net, ep

    async def _reserve(
        self,
        net: Network,
        req: AttachRequest,
        cid: str,
        ifname: str,
        plumb: bool,
        caller: Caller | None,
    ) -> Endpoint:
        """Allocate and durably record the endpoint in state "creating" (network lock held).

        The record is durable before any kernel object exists, so a crash from here on is found
        and undone at the next start.
        """
        allocator = self._ipam[net.id]
        addresses, cursors = allocator.allocate(req.static_ips)
        ep = Endpoint(
            network_id=net.id,
            container_id=cid,
            ifname=ifname,
            netns=req.netns,
            host_ifname=host_veth_name(net.id, cid, ifname) if plumb else "",
            addresses=tuple(addresses),
            mac=req.mac,
            name=req.name,
            hostname=req.hostname,
            aliases=req.aliases,
            port_mappings=req.port_mappings,
            dns_servers=req.dns_servers,
            state="creating",
            created=time.time(),
            owner_uid=caller.uid if caller else 0,
            origin=req.origin,
            netns_inode=req.netns_inode,
        )
        await asyncio.to_thread(self.store.put_endpoint, ep, cursors)
        allocator.commit([a.ip for a in addresses], cursors)
        self._endpoints[net.id][ep.key] = ep
        return ep

    def _plumb_and_record(self, net: Network, ep: Endpoint) -> Endpoint:
        """Interfaces, firewall elements, then the "ready" record: one worker-thread hop.

        A failing step undoes the steps before it, so the caller only has to forget the
        reservation.
        """
        driver = self._driver(net)
        plumbed = driver.setup_endpoint(net, ep)
        try:
            faults.point("service.plumbed")
            self.firewall.add_endpoint(net, plumbed)
            try:
                faults.point("service.firewalled")
                ready = dataclasses.replace(plumbed, state="ready")
                self.store.put_endpoint(ready, {})
            except BaseException:
                _undo_step("firewall", self.firewall.remove_endpoint, net, plumbed)
                raise
        except BaseException:
            _undo_step("interfaces", driver.teardown_endpoint, net, plumbed)
            raise
        return ready

    def _unplumb(self, net: Network, ep: Endpoint) -> None:
        """Undo :meth:`_plumb_and_record` after it succeeded (the request was cancelled)."""
        _undo_step("firewall", self.firewall.remove_endpoint, net, ep)
        _undo_step("interfaces", self._driver(net).teardown_endpoint, net, ep)

    async def _forget(self, net: Network, ep: Endpoint) -> None:
        """Drop an endpoint's record and addresses (store first, then memory)."""
        await asyncio.to_thread(self.store.delete_endpoint, net.id, ep.container_id, ep.ifname)
        self._endpoints[net.id].pop(ep.key, None)
        self._ipam[net.id].release([a.ip for a in ep.addresses])

    async def _teardown(self, net: Network, ep: Endpoint, netns: str | None = None) -> None:
        """Best-effort removal of an endpoint's firewall elements and interfaces; logs failures."""
        failures: list[str] = []
        try:
            if not is_ipam_only(net):
                await asyncio.to_thread(self.firewall.remove_endpoint, net, ep)
        except NetdError as exc:
            failures.append(str(exc))
        if ep.host_ifname:
            target = (
                ep if netns is None or netns == ep.netns else dataclasses.replace(ep, netns=netns)
            )
            failures += await asyncio.to_thread(self._driver(net).teardown_endpoint, net, target)
        faults.point("service.endpoint_torn_down")
        for failure in failures:
            log.error(
                "detaching %s/%s from %s: %s", ep.container_id[:12], ep.ifname, net.name, failure
            )

    async def _remove_endpoint(self, net: Network, ep: Endpoint, netns: str | None = None) -> None:
        """Teardown, then release the record and addresses (the address is always released)."""
        await self._teardown(net, ep, netns)
        await self._forget(net, ep)

    async def detach(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        """Idempotent detach: a missing network, endpoint or namespace is not an error.

        The record changes first: the endpoint is durably marked ``deleting`` before anything in
        the kernel is touched, so a store that cannot write fails the detach with kernel, DNS
        and record unchanged, and a retry succeeds. A failure later (the record cannot be
        deleted after the teardown) leaves a ``deleting`` record, which the reconciler, the next
        start or a retried detach finishes. Like attach, the kernel work runs outside the
        network's lock with the attachment marked in flight; the address is released after the
        interface is gone.
        """
        try:
            net = self.find_network(network)
        except NotFound:
            return
        key = (container_id, ifname)
        async with self._lock(net.id):
            ep = self._endpoints.get(net.id, {}).get(key)
            if ep is None:
                return
            self._busy(net, key)
            ep = await self._mark_deleting(net, ep)
            self._inflight[net.id].add(key)
        try:
            await self._teardown(net, ep, netns or None)
            async with self._lock(net.id):
                await self._forget(net, ep)
        finally:
            self._inflight[net.id].discard(key)
            await self._publish_dns(net)  # a deleting endpoint no longer resolves
        log.info("detached %s/%s from %s", container_id[:12], ifname, net.name)

    async def _mark_deleting(self, net: Network, ep: Endpoint) -> Endpoint:
        """Durably record that ``ep`` is being removed (network lock held); StoreError changes
        nothing."""
        if ep.state == "deleting":
            return ep
        deleting = dataclasses.replace(ep, state="deleting")
        await asyncio.to_thread(self.store.put_endpoint, deleting, {})
        self._endpoints[net.id][ep.key] = deleting
        return deleting

    async def check(self, network: str, container_id: str, ifname: str, netns: str) -> None:
        """Raise NotFound/KernelError naming the first thing that is not as recorded."""
        net = self.find_network(network)
        ep = self._endpoints.get(net.id, {}).get((container_id, ifname))
        if ep is None or ep.state != "ready":
            raise NotFound(
                f"container {container_id!r} has no attachment {ifname!r} on network {net.name!r}",
                field="container_id",
                value=container_id,
            )
        allocator = self._ipam[net.id]
        lost = [str(a) for a in ep.addresses if not allocator.taken(a.ip)]
        if lost:
            raise KernelError(f"allocation of {', '.join(lost)} on network {net.name!r} is lost")
        if not ep.host_ifname:
            return  # IPAM-only attachment: the interfaces belong to another plugin
        target = ep if not netns or netns == ep.netns else dataclasses.replace(ep, netns=netns)
        status = await asyncio.to_thread(self._driver(net).check_endpoint, net, target)
        if status.problems:
            raise KernelError("; ".join(status.problems))

    async def gc(self, network: str, valid: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove CNI attachments of ``network`` that the runtime no longer lists."""
        try:
            net = self.find_network(network)
        except NotFound:
            return []
        removed = []
        async with self._lock(net.id):
            busy = self._inflight.get(net.id, set())
            for ep in list(self._endpoints.get(net.id, {}).values()):
                if ep.origin == "cni" and ep.key not in valid and ep.key not in busy:
                    await self._remove_endpoint(net, ep)
                    removed.append(ep.key)
        if removed:
            log.info("gc on %s removed %d attachments", net.name, len(removed))
            await self._publish_dns(net)
        return removed

    def find_endpoints(self, network: Network, container_id: str) -> list[Endpoint]:
        """Endpoints of one container on one network."""
        return [e for e in self.endpoints(network) if e.container_id == container_id]
