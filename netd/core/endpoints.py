"""Endpoint lifecycles: attach (allocate, record, plumb, firewall, ready), detach, check, gc.

The network's lock covers only the bookkeeping (IPAM, the record); the kernel and firewall work
runs outside it with the attachment marked in flight, so attaches to one network overlap their
netlink waits and a concurrent request for the same (container, interface) gets Unavailable
rather than racing it. Records change before the kernel does: an attach is durably ``creating``
before any kernel object exists, a detach durably ``deleting`` before anything is removed, so a
crash at any point is found and finished at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from functools import partial

from .. import faults
from ..attachments import existing_connection
from ..drivers.base import not_plumbed
from ..drivers.macs import random_mac
from ..errors import Conflict, InvalidInput, KernelError, NetdError, NotFound
from ..firewall.policy import check_port_mappings
from ..model import (
    AttachRequest,
    Caller,
    Endpoint,
    IPAddress,
    IPInterface,
    Network,
    PortMapping,
)
from ..names import check_container_id, check_ifname
from ..store.base import Store
from .dns_publish import DnsPublisher
from .firewalling import Firewalling
from .state import State
from .undo import Undo, finish_in_thread, undo_step

log = logging.getLogger("netd.service")
ADDRESS_RETRIES = 8  # global networks: picks of an address another node took meanwhile
CheckPublish = Callable[[tuple[PortMapping, ...], frozenset[tuple[IPAddress, int]]], None]


class Endpoints:
    """Attach, detach, check and garbage-collect endpoints."""

    def __init__(
        self,
        state: State,
        store: Store,
        firewall: Firewalling,
        dns: DnsPublisher,
        *,
        validate_netns: Callable[[str, int], None],
        check_publish: CheckPublish,
    ) -> None:
        self.state = state
        self.store = store
        self.firewall = firewall
        self.dns = dns
        self.validate_netns = validate_netns
        self.check_publish = check_publish  # refuses ports a host socket holds

    def _check_request(self, net: Network, req: AttachRequest, plumb: bool) -> None:
        """What the network's driver cannot do for this request (before anything changes)."""
        caps = self.state.caps(net)
        if plumb and not caps.plumbs:
            raise not_plumbed(net)
        if req.port_mappings and not caps.port_mappings:
            raise InvalidInput(
                "port_mappings",
                ", ".join(f"{p.host_port}/{p.protocol}" for p in req.port_mappings),
                f"network {net.name!r} (driver {net.driver}) cannot publish ports: its "
                "containers are not behind the host (Docker refuses this too)",
            )

    async def attach(
        self, req: AttachRequest, *, plumb: bool = True, caller: Caller | None = None
    ) -> tuple[Network, Endpoint]:
        """Allocate addresses, plumb the interface, add firewall elements, record; or nothing.

        On a global network the store may refuse the addresses only after the kernel work (the
        cluster store writes etcd while the interface is made): another node took the address
        first. Everything was undone then, so the attach picks another address and starts
        again (dynamic addresses only; a static one is the caller's choice).
        """
        for attempt in range(1, ADDRESS_RETRIES + 1):
            try:
                return await self._attach_once(req, plumb=plumb, caller=caller)
            except Conflict as e:
                try:
                    net: Network | None = self.state.find_network(req.network)
                except NotFound:
                    net = None  # removed meanwhile: the conflict is the answer
                shared = net is not None and self.state.caps(net).scope == "global"
                if not shared or req.static_ips or e.field not in ("address", "block"):
                    raise
                if attempt == ADDRESS_RETRIES:
                    raise
                log.info("%s %s on %s was taken by another node meanwhile; attaching again",
                         e.field, e.value, req.network)  # fmt: skip
                if e.field == "address" and net is not None:
                    async with self.state.lock(net.id):
                        with contextlib.suppress(Conflict, InvalidInput, KeyError):
                            ip = ipaddress.ip_address(str(e.value))
                            self.state.ipam[net.id].commit([ip])
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _attach_once(
        self, req: AttachRequest, *, plumb: bool, caller: Caller | None
    ) -> tuple[Network, Endpoint]:
        """One attempt of :meth:`attach`."""
        state = self.state
        net = state.find_network(req.network)
        cid = check_container_id(req.container_id)
        ifname = check_ifname(req.ifname)
        check_port_mappings(req.port_mappings)  # ::1: before anything changes, any backend
        self._check_request(net, req, plumb)
        if plumb:
            self.validate_netns(req.netns, req.netns_inode)
            if req.port_mappings:  # reads /proc/net tables: off the event loop
                await asyncio.to_thread(self.check_publish, req.port_mappings, self.dns.own_dns())
        key = (cid, ifname)
        async with state.lock(net.id):
            if net.id not in state.networks:
                raise NotFound(
                    f"network {req.network!r} not found", field="network", value=req.network
                )
            state.refuse_busy(net, key)
            # `netd network connect` twice: refused, or the same endpoint for a retry.
            same = existing_connection(net, state.endpoints[net.id].values(), req, cid, ifname)
            if same is not None:
                return net, same
            existing = state.endpoints[net.id].get(key)
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
                await self.remove(net, existing)  # leftover of an interrupted attach
            ep = await self._reserve(net, req, cid, ifname, plumb, caller)
            state.inflight[net.id].add(key)
        # The name resolves from the moment its addresses are recorded: the DNS worker's round
        # trip overlaps the kernel work instead of following it (the container's processes do
        # not run before ADD returns, so nobody can notice the few milliseconds' lead).
        published = asyncio.ensure_future(self.dns.publish(net))
        try:
            faults.point("service.recorded")
            if plumb:
                ep = await finish_in_thread(
                    self._plumb_and_record, partial(self._unplumb, net), net, ep
                )
            else:
                ep = dataclasses.replace(ep, state="ready")
                await asyncio.to_thread(self.store.put_endpoint, ep, {})
            async with state.lock(net.id):
                state.endpoints[net.id][key] = ep
        except BaseException:
            try:
                async with state.lock(net.id):
                    await self._forget(net, ep)
            finally:
                await asyncio.shield(published)
                await self.dns.publish(net)  # withdraw the name (whatever _forget managed)
            raise
        finally:
            state.inflight[net.id].discard(key)
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
        driver = self.state.driver(net)
        shared = driver.capabilities.scope == "global"
        for attempt in range(1, ADDRESS_RETRIES + 1):
            allocator = self.state.ipam[net.id]  # the cluster sync may replace it meanwhile
            addresses, cursors = allocator.allocate(req.static_ips)
            ep = self._endpoint(net, req, cid, ifname, plumb, caller, addresses)
            try:
                await asyncio.to_thread(self.store.put_endpoint, ep, cursors)
            except Conflict as e:
                # On a global network another node may have taken the address since this
                # node's view was last synced: the store (etcd) refused it, so skip it and pick
                # again. A static address is the caller's choice: its conflict is final.
                final = not shared or req.static_ips or attempt == ADDRESS_RETRIES
                if final or e.field not in ("address", "block"):
                    raise
                log.info("%s %s on %s was just taken by another node; picking again",
                         e.field, e.value, net.name)  # fmt: skip
                if e.field == "address":
                    with contextlib.suppress(Conflict):  # the view may know it by now
                        self.state.ipam[net.id].commit([ipaddress.ip_address(str(e.value))])
                continue
            break
        self.state.ipam[net.id].commit([a.ip for a in addresses], cursors)
        self.state.endpoints[net.id][ep.key] = ep
        return ep

    def _endpoint(
        self,
        net: Network,
        req: AttachRequest,
        cid: str,
        ifname: str,
        plumb: bool,
        caller: Caller | None,
        addresses: list[IPInterface],
    ) -> Endpoint:
        """The "creating" record of an attachment with these addresses.

        On a network across hosts the record is complete before the kernel work: its MACs
        and namespace inode are chosen here, not by the driver, so that the record the
        cluster store sends to etcd while the interface is made is already the one other
        nodes serve (netd.cluster.store: one etcd write per attach, not two).
        """
        driver = self.state.driver(net)
        shared = driver.capabilities.scope == "global"
        mac, inode = req.mac, req.netns_inode
        host_mac: str | None = None
        if shared and plumb:
            mac = mac or random_mac()
            host_mac = random_mac()
            inode = inode or _inode(req.netns)
        return Endpoint(
            network_id=net.id,
            container_id=cid,
            ifname=ifname,
            netns=req.netns,
            host_ifname=driver.endpoint_host_ifname(net, cid, ifname) if plumb else "",
            addresses=tuple(addresses),
            mac=mac,
            host_mac=host_mac,
            name=req.name,
            hostname=req.hostname,
            aliases=req.aliases,
            port_mappings=req.port_mappings,
            dns_servers=req.dns_servers,
            state="creating",
            created=time.time(),
            owner_uid=caller.uid if caller else 0,
            origin=req.origin,
            netns_inode=inode,
            node=self.state.node if shared else "",
        )

    def _plumb_and_record(self, net: Network, ep: Endpoint) -> Endpoint:
        """Interfaces, firewall elements, then the "ready" record: one worker-thread hop.

        A failing step undoes the steps before it, so the caller only has to forget the
        reservation.
        """
        driver = self.state.driver(net)
        plumbed = driver.setup_endpoint(net, ep)
        undo = Undo()
        undo.push("interfaces", driver.teardown_endpoint, net, plumbed)
        try:
            faults.point("service.plumbed")
            self.firewall.add_endpoint(net, plumbed)
            undo.push("firewall", self.firewall.remove_endpoint, net, plumbed)
            faults.point("service.firewalled")
            ready = dataclasses.replace(plumbed, state="ready")
            self.store.put_endpoint(ready, {})
        except BaseException:
            undo.run()
            raise
        return ready

    def _unplumb(self, net: Network, ep: Endpoint) -> None:
        """Undo :meth:`_plumb_and_record` after it succeeded (the request was cancelled)."""
        undo_step("firewall", self.firewall.remove_endpoint, net, ep)
        undo_step("interfaces", self.state.driver(net).teardown_endpoint, net, ep)

    async def _forget(self, net: Network, ep: Endpoint) -> None:
        """Drop an endpoint's record and addresses (store first, then memory)."""
        await asyncio.to_thread(self.store.delete_endpoint, net.id, ep.container_id, ep.ifname)
        self.state.endpoints[net.id].pop(ep.key, None)
        self.state.ipam[net.id].release([a.ip for a in ep.addresses])

    async def teardown(self, net: Network, ep: Endpoint, netns: str | None = None) -> None:
        """Best-effort removal of an endpoint's firewall elements and interfaces; logs failures."""
        failures: list[str] = []
        try:
            await asyncio.to_thread(self.firewall.remove_endpoint, net, ep)
        except NetdError as exc:
            failures.append(str(exc))
        if self.state.plumbed(net):  # an IPAM-only network's interfaces are another plugin's
            target = (
                ep if netns is None or netns == ep.netns else dataclasses.replace(ep, netns=netns)
            )
            driver = self.state.driver(net)
            failures += await asyncio.to_thread(driver.teardown_endpoint, net, target)
        faults.point("service.endpoint_torn_down")
        for failure in failures:
            log.error(
                "detaching %s/%s from %s: %s", ep.container_id[:12], ep.ifname, net.name, failure
            )

    async def remove(self, net: Network, ep: Endpoint, netns: str | None = None) -> None:
        """Teardown, then release the record and addresses (the address is always released)."""
        await self.teardown(net, ep, netns)
        await self._forget(net, ep)

    async def detach(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        """Idempotent detach: a missing network, endpoint or namespace is not an error.

        The endpoint is durably marked ``deleting`` before anything in the kernel is touched, so
        a store that cannot write fails the detach with kernel, DNS and record unchanged, and a
        retry succeeds. A failure later (the record cannot be deleted after the teardown) leaves
        a ``deleting`` record, which the reconciler, the next start or a retried detach finishes.
        """
        state = self.state
        try:
            net = state.find_network(network)
        except NotFound:
            return
        key = (container_id, ifname)
        async with state.lock(net.id):
            ep = state.endpoint(net.id, key)
            if ep is None:
                return
            state.refuse_busy(net, key)
            ep = await self._mark_deleting(net, ep)
            state.inflight[net.id].add(key)
        try:
            await self.teardown(net, ep, netns or None)
            async with state.lock(net.id):
                await self._forget(net, ep)
        finally:
            state.inflight[net.id].discard(key)
            await self.dns.publish(net)  # a deleting endpoint no longer resolves
        log.info("detached %s/%s from %s", container_id[:12], ifname, net.name)

    async def _mark_deleting(self, net: Network, ep: Endpoint) -> Endpoint:
        """Durably record that ``ep`` is being removed (network lock held); StoreError changes
        nothing."""
        if ep.state == "deleting":
            return ep
        deleting = dataclasses.replace(ep, state="deleting")
        await asyncio.to_thread(self.store.put_endpoint, deleting, {})
        self.state.endpoints[net.id][ep.key] = deleting
        return deleting

    async def check(self, network: str, container_id: str, ifname: str, netns: str) -> None:
        """Raise NotFound/KernelError naming the first thing that is not as recorded."""
        state = self.state
        net = state.find_network(network)
        ep = state.endpoint(net.id, (container_id, ifname))
        if ep is None or ep.state != "ready":
            raise NotFound(
                f"container {container_id!r} has no attachment {ifname!r} on network {net.name!r}",
                field="container_id",
                value=container_id,
            )
        allocator = state.ipam[net.id]
        lost = [str(a) for a in ep.addresses if not allocator.taken(a.ip)]
        if lost:
            raise KernelError(f"allocation of {', '.join(lost)} on network {net.name!r} is lost")
        if not state.plumbed(net):
            return  # IPAM-only attachment: the interfaces belong to another plugin
        target = ep if not netns or netns == ep.netns else dataclasses.replace(ep, netns=netns)
        status = await asyncio.to_thread(state.driver(net).check_endpoint, net, target)
        if status.problems:
            raise KernelError("; ".join(status.problems))

    async def gc(self, network: str, valid: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove CNI attachments of ``network`` that the runtime no longer lists."""
        state = self.state
        try:
            net = state.find_network(network)
        except NotFound:
            return []
        removed = []
        async with state.lock(net.id):
            busy = state.inflight.get(net.id, set())
            for ep in list(state.endpoints.get(net.id, {}).values()):
                if ep.origin == "cni" and ep.key not in valid and ep.key not in busy:
                    await self.remove(net, ep)
                    removed.append(ep.key)
        if removed:
            log.info("gc on %s removed %d attachments", net.name, len(removed))
            await self.dns.publish(net)
        return removed


def _inode(netns: str) -> int:
    """The inode of the namespace at ``netns`` (validated just before), 0 if it cannot be
    read now: the driver then reads it when it opens the namespace, as for local networks."""
    try:
        return os.stat(netns).st_ino
    except OSError:
        return 0
