"""Network lifecycles: create (validate, driver, firewall, record) and remove, or nothing.

Creating and removing take the global lock (names, subnets and host interfaces are unique
across networks); each step of a create pushes its undo, so a failure halfway leaves nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable

from .. import faults
from ..errors import Conflict, InvalidInput, NetdError, NotFound
from ..firewall.policy import check_backend_supports
from ..ipam.subnets import DefaultPool
from ..model import Caller, Endpoint, IPNetwork, Network, NetworkSpec
from ..names import check_network_name
from ..spec import build_network
from ..store.base import Store
from .dns_publish import DnsPublisher
from .firewalling import Firewalling
from .state import State
from .undo import Undo

log = logging.getLogger("netd.service")
FIRST_VNI = 4096  # VXLAN ids below are left to the operator's -o vni=N
VNI_RETRIES = 8
Admit = Callable[[Network, list[Network], list[IPNetwork]], None]


def free_vni(networks: Iterable[Network], skip: set[int]) -> int:
    """The lowest VXLAN id from 4096 (Docker's first) that no network uses and not in
    ``skip``."""
    used = {int(n.options["vni"]) for n in networks if n.options.get("vni", "").isdigit()}
    used |= skip
    vni = FIRST_VNI
    while vni in used:
        vni += 1
    return vni


class Networks:
    """Create, ensure, remove and prune networks."""

    def __init__(
        self,
        state: State,
        store: Store,
        firewall: Firewalling,
        dns: DnsPublisher,
        *,
        pools: Iterable[DefaultPool],
        ula: ipaddress.IPv6Network,
        host_routes: Callable[[], list[IPNetwork]],
        remove_endpoint: Callable[[Network, Endpoint], Awaitable[None]],
    ) -> None:
        self.state = state
        self.store = store
        self.firewall = firewall
        self.dns = dns
        self.pools = tuple(pools)
        self.ula = ula
        self.host_routes = host_routes
        self._remove_endpoint = remove_endpoint  # Endpoints.remove (reaped leftovers)

    def _check_unique_interface(self, net: Network) -> None:
        """Conflict when another network already uses ``net``'s host interface (a bridge)."""
        iface = self.state.driver(net).host_interface(net)
        if not iface:
            return
        for other in self.state.networks.values():
            if self.state.driver(other).host_interface(other) == iface:
                raise Conflict(
                    f"{net.driver} {iface!r} is already used by network {other.name!r}",
                    field=f"options.{net.driver}" if net.driver == "bridge" else "options",
                    value=iface,
                )

    async def create(
        self, spec: NetworkSpec, caller: Caller | None = None, *, admit: Admit | None = None
    ) -> Network:
        """Validate and create a network: kernel objects, firewall, record.

        ``admit(network, existing, host_routes)`` may refuse the validated network by raising;
        it runs under the global lock before any kernel work (rootless quotas use it, so two
        parallel creates cannot both squeeze under a quota).
        """
        driver = self.state.driver_named(spec.driver)
        missing = await asyncio.to_thread(driver.available)
        if missing:
            raise InvalidInput("driver", spec.driver, f"not supported on this host: {missing}")
        # Before the global lock and off the event loop: an external driver's plugin may take
        # its whole timeout to answer, and nothing else may wait for it.
        options = await asyncio.to_thread(driver.validate_options, dict(spec.options))
        state = self.state
        async with state.global_lock:
            routes = await asyncio.to_thread(self.host_routes)
            net = build_network(
                spec,
                existing=list(state.networks.values()),
                host_routes=routes,
                pools=self.pools,
                ula=self.ula,
                validate_options=lambda _given: options,
                owner_uid=caller.uid if caller else 0,
            )
            if admit is not None:
                admit(net, list(state.networks.values()), routes)
            if driver.capabilities.firewall:
                backend = self.firewall.backend
                check_backend_supports(net, backend.name, backend.capabilities)
            self._check_unique_interface(net)
            auto_vni = driver.capabilities.scope == "global" and not net.options.get("vni")
            tried: set[int] = set()
            while True:
                if auto_vni:  # overlay: the lowest VXLAN id no network of the cluster has
                    vni = free_vni(state.networks.values(), tried)
                    net = dataclasses.replace(net, options={**net.options, "vni": str(vni)})
                try:
                    await self._realise(net)
                    break
                except Conflict as e:
                    # Another node took the same id at the same moment: etcd refused ours.
                    if not auto_vni or e.field != "options.vni" or len(tried) >= VNI_RETRIES:
                        raise
                    tried.add(int(net.options["vni"]))
            state.add_network(net)
        log.info(
            "created network %s (%s, driver %s) %s",
            net.name,
            net.short_id,
            net.driver,
            ", ".join(str(s.subnet) for s in net.subnets),
        )
        await self.dns.publish(net)
        return net

    async def _realise(self, net: Network) -> None:
        """Kernel objects, firewall and record of a validated network (global lock held); on
        failure, undone."""
        driver = self.state.driver(net)
        undo = Undo()
        try:
            await asyncio.to_thread(driver.ensure_network, net)
            undo.push("network links", driver.teardown_network, net)
            faults.point("service.network_plumbed")
            await asyncio.to_thread(self.firewall.ensure_network, net)
            undo.push("firewall", self.firewall.remove_network, net)
            await asyncio.to_thread(self.store.create_network, net)
        except BaseException:
            await undo.arun()
            raise

    async def ensure(self, spec: NetworkSpec) -> Network:
        """Return the named network, creating it from ``spec`` when it does not exist."""
        name = check_network_name(spec.name)
        try:
            return self.state.find_network(name)
        except NotFound:
            pass
        try:
            return await self.create(spec)
        except Conflict:
            # A parallel ADD created it first: that is the network we want.
            return self.state.find_network(name)

    async def remove(self, name: str) -> Network:
        """Remove a network without endpoints (Docker refuses while endpoints are active)."""
        state = self.state
        async with state.global_lock:
            net = state.find_network(name)
            async with state.lock(net.id):
                table = state.endpoints.get(net.id, {})
                for dead in [e for e in table.values() if e.state == "gone"]:
                    await self._remove_endpoint(net, dead)  # reaped: only its address was left
                eps = state.endpoints.get(net.id, {})
                if eps:
                    ids = ", ".join(sorted({e.container_id[:12] for e in eps.values()}))
                    raise Conflict(
                        f"network {net.name!r} has active endpoints ({ids}); disconnect them first",
                        field="network",
                        value=net.name,
                    )
                await asyncio.to_thread(self.store.delete_network, net.id)
                faults.point("service.network_unrecorded")
                await self._dismantle(net, "removing network")
        state.forget_lock(net.id)
        log.info("removed network %s (%s)", net.name, net.short_id)
        await self.dns.publish(net, removed=True)
        return net

    async def _dismantle(self, net: Network, doing: str) -> None:
        """Stop holding ``net`` and remove its firewall part and kernel objects (locks held; its
        record is already gone); each failure is logged, none stops the others."""
        self.state.drop_network(net)
        failures: list[str] = []
        try:
            await asyncio.to_thread(self.firewall.remove_network, net)
        except NetdError as exc:
            failures.append(str(exc))
        failures += await asyncio.to_thread(self.state.driver(net).teardown_network, net)
        for failure in failures:
            log.error("%s %s: %s", doing, net.name, failure)

    async def adopt(self, net: Network) -> None:
        """Serve a global network another node created: its kernel objects and firewall here,
        then the record in the cache (the store already has it). A name that a local network
        of this node uses keeps the local one and logs (names of local networks are unique per
        node, global ones across the cluster; docs/multi-host.md)."""
        state = self.state
        async with state.global_lock:
            if net.id in state.networks:
                return
            clash = [n for n in state.networks.values() if n.name == net.name]
            if clash:
                log.error(
                    "cluster network %s (%s) not served here: a local network has its name",
                    net.name,
                    net.short_id,
                )
                return
            driver = state.driver(net)
            undo = Undo()
            try:
                await asyncio.to_thread(driver.ensure_network, net)
                undo.push("network links", driver.teardown_network, net)
                await asyncio.to_thread(self.firewall.ensure_network, net)
            except BaseException:
                await undo.arun()
                raise
            state.add_network(net)
        log.info("serving cluster network %s (%s, driver %s)", net.name, net.short_id, net.driver)
        await self.dns.publish(net)

    async def release(self, net: Network) -> bool:
        """Stop serving a global network removed elsewhere (its record is gone from the
        cluster); False while this node still has endpoints on it."""
        state = self.state
        async with state.global_lock:
            if net.id not in state.networks:
                return True
            async with state.lock(net.id):
                if state.endpoints.get(net.id):
                    return False
                await self._dismantle(net, "releasing cluster network")
        state.forget_lock(net.id)
        log.info("cluster network %s (%s) removed elsewhere: torn down here", net.name,
                 net.short_id)  # fmt: skip
        await self.dns.publish(net, removed=True)
        return True

    async def prune(self, among: Iterable[Network] | None = None) -> list[str]:
        """Remove every network (of ``among``, default all) without endpoints; their names."""
        removed = []
        for net in self.state.list_networks() if among is None else among:
            if not self.state.endpoints.get(net.id):
                try:
                    await self.remove(net.id)
                    removed.append(net.name)
                except (Conflict, NotFound):
                    continue  # gained an endpoint or vanished meanwhile
        return removed
