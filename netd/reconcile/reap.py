"""Reaping endpoints whose network namespace is gone for good.

A runtime that never sends DEL (the daemon was down and the plugin could not spool, a runtime
that crashed, a reboot) would leave an endpoint ``ready`` for ever: its address allocated, its
host ports published, its DNS names resolving to a dead address. The reconciler finds endpoints
whose recorded namespace path no longer leads to the namespace they were plumbed in (each is
pinned by the namespace's nsfs inode), and this module decides whether that namespace is gone
*for good* or only unmounted from that path:

- the endpoint's host-side link still exists: alive (a veth pair is destroyed with the namespace
  holding one end, so a live link means a live namespace, whatever the path says);
- a task runs in it, a process holds it open, or it is bind-mounted anywhere (the mount tables of
  every mount namespace are read): alive;
- no inode was recorded (an endpoint rebuilt by ``netd recover``): never judged gone, for a new
  namespace could not be told from the old one;
- otherwise gone for good: a network namespace cannot come back once nothing holds it.

An endpoint gone for good is reaped in two steps. At once: its published ports and firewall
elements are removed, its DNS names withdrawn, and its record marked ``gone`` (durably, with the
time). After the grace period (config ``reap_grace``): its record is deleted and its addresses
released. The grace keeps a dead address from being handed to a new container while peers may
still hold it (DNS caches, conntrack entries, open connections) and lets a late DEL or GC from
the runtime do the release itself. A live namespace is never reaped.

:class:`Reaper` applies this to the service; it takes the service's per-network locks exactly as
the service's own operations do. What it does not do: delete any namespace or any link (the
kernel already did), or act on IPAM-only attachments (their interfaces belong to another plugin).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Mapping, Set
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, NetdError
from ..metrics import METRICS
from ..model import Endpoint, Network
from .inventory import inventories
from .plan import EndpointId, endpoint_id, needs_check

if TYPE_CHECKING:
    from ..core.parts import Core

log = logging.getLogger("netd.reap")
DEFAULT_GRACE = 60.0
MAX_EVIDENCE = 3  # holders named per namespace in the log and the status


def namespace_holders(inodes: Set[int], proc: Path = Path("/proc")) -> dict[int, list[str]]:
    """For each network namespace inode, what still holds it (empty list: nothing found).

    Looks at every task's namespace, every process's open files and the mount table of every
    mount namespace (``/proc/<pid>/mountinfo``, once per mount namespace): the three things that
    keep a namespace alive and can be seen from ``/proc``.
    """
    found: dict[int, list[str]] = {inode: [] for inode in inodes}
    if not inodes:
        return found
    wanted = {f"net:[{inode}]": inode for inode in inodes}
    mount_namespaces: set[str] = set()
    for pid in sorted((name for name in os.listdir(proc) if name.isdigit()), key=int):
        base = f"{proc}/{pid}"
        try:
            tasks = os.listdir(f"{base}/task")
        except OSError:
            continue  # exited meanwhile
        for tid in tasks:
            inode = wanted.get(_readlink(f"{base}/task/{tid}/ns/net"))
            if inode is not None:
                found[inode].append(f"task {tid} of pid {pid} runs in it")
        try:
            fds = os.listdir(f"{base}/fd")
        except OSError:
            fds = []
        for fd in fds:
            inode = wanted.get(_readlink(f"{base}/fd/{fd}"))
            if inode is not None:
                found[inode].append(f"pid {pid} holds it open (fd {fd})")
        mnt = _readlink(f"{base}/ns/mnt")
        if not mnt or mnt in mount_namespaces:
            continue
        mount_namespaces.add(mnt)
        try:
            with open(f"{base}/mountinfo", encoding="utf-8", errors="replace") as fh:
                table = fh.read()
        except OSError:
            continue
        for line in table.splitlines():
            fields = line.split(" ", 5)
            inode = wanted.get(fields[3]) if len(fields) > 4 else None
            if inode is not None:
                found[inode].append(f"bind-mounted at {fields[4]} (mount namespace of pid {pid})")
    return found


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def evidence(
    ep: Endpoint, host_side: Set[str], tagged: Set[str], holders: Mapping[int, list[str]]
) -> list[str]:
    """Why ``ep``'s namespace, whose path no longer leads to it, may still be alive; [] if not.

    ``host_side``: the tags of the endpoint's host-side objects (its driver's
    ``endpoint_tags``); ``tagged``: the tags the kernel holds now.
    """
    found = []
    if host_side & tagged:
        found.append(f"its host interface {ep.host_ifname} still exists")
    if not ep.netns_inode:
        found.append("no namespace inode was recorded for it, so it cannot be told from a new one")
    return found + holders.get(ep.netns_inode, [])[:MAX_EVIDENCE]


def release_at(ep: Endpoint, grace: float) -> float:
    """When a reaped endpoint's addresses are released (wall-clock seconds)."""
    return ep.gone_since + grace


def due(endpoints: Iterable[Endpoint], now: float, grace: float) -> list[Endpoint]:
    """Reaped endpoints whose grace period is over."""
    return [ep for ep in endpoints if ep.state == "gone" and release_at(ep, grace) <= now]


def describe(ep: Endpoint, network: Network, grace: float) -> dict[str, Any]:
    """A reaped endpoint as ``/v1/status`` shows it."""
    return {
        "network": network.name,
        "container_id": ep.container_id,
        "ifname": ep.ifname,
        "netns": ep.netns,
        "netns_inode": ep.netns_inode,
        "addresses": [str(a) for a in ep.addresses],
        "gone_since": ep.gone_since,
        "release_at": release_at(ep, grace),
    }


class Reaper:
    """Judges, withdraws and finally releases the endpoints of dead namespaces (module doc)."""

    def __init__(self, service: Core, grace: float, proc: Path = Path("/proc")) -> None:
        self._svc = service
        self.grace = grace
        self.proc = proc
        # Endpoints whose path is gone but whose namespace lives: id -> (endpoint, evidence).
        self.held: dict[EndpointId, tuple[Endpoint, list[str]]] = {}

    def judge(self, endpoints: list[Endpoint]) -> dict[EndpointId, list[str]]:
        """Evidence that each namespace (path already unusable) lives; [] means gone for good.

        Blocking (reads /proc and lists links): run it in a worker thread.
        """
        if not endpoints:
            return {}
        state = self._svc.state
        tagged = set(inventories(state.drivers))
        holders = namespace_holders(
            {ep.netns_inode for ep in endpoints if ep.netns_inode}, self.proc
        )
        out = {}
        for ep in endpoints:
            net = state.networks[ep.network_id]
            host_side = state.driver(net).endpoint_tags(net, ep)
            out[endpoint_id(ep)] = evidence(ep, host_side, tagged, holders)
        return out

    def unusable(self, endpoints: list[Endpoint]) -> list[Endpoint]:
        """The endpoints whose recorded path no longer leads to their namespace (blocking)."""
        out = []
        for ep in endpoints:
            try:
                self._svc.validate_netns(ep.netns, ep.netns_inode)
            except InvalidInput:
                out.append(ep)
            else:
                self.held.pop(endpoint_id(ep), None)
        return out

    def note_held(self, ep: Endpoint, found: list[str]) -> None:
        """Remember (and log once) an endpoint whose path is gone but whose namespace lives."""
        key = endpoint_id(ep)
        if key not in self.held:
            log.warning(
                "reconcile: namespace path %s of %s/%s no longer leads to net:[%d], but the "
                "namespace is alive (%s): not reaped",
                ep.netns,
                ep.container_id[:12],
                ep.ifname,
                ep.netns_inode,
                "; ".join(found),
            )
        self.held[key] = (ep, found)

    async def withdraw(self, net: Network, ep: Endpoint) -> bool:
        """Reap step one (the network's lock held): ports, firewall elements, DNS names."""
        svc = self._svc
        try:
            await asyncio.to_thread(svc.firewalling.remove_endpoint, net, ep)
        except NetdError as exc:
            log.error("reap: removing the firewall elements of %s failed: %s", ep.container_id, exc)
            return False  # the next pass tries again
        gone = dataclasses.replace(ep, state="gone", gone_since=time.time())
        await asyncio.to_thread(svc.store.put_endpoint, gone, {})
        svc.state.endpoints[net.id][ep.key] = gone
        self.held.pop(endpoint_id(ep), None)
        await svc.publisher.publish(net)
        names = [n for n in (ep.name, ep.hostname, *ep.aliases) if n]
        ports = [f"{p.host_port}/{p.protocol}" for p in ep.port_mappings]
        log.warning(
            "reap: namespace %s (net:[%d]) of %s/%s on %s is gone for good: withdrew DNS names "
            "[%s] and published ports [%s]; its addresses %s are released in %g s (reap_grace)",
            ep.netns,
            ep.netns_inode,
            ep.container_id[:12],
            ep.ifname,
            net.name,
            ", ".join(dict.fromkeys(names)),
            ", ".join(ports),
            " ".join(str(a) for a in ep.addresses),
            self.grace,
        )
        METRICS.reconcile_repairs.labels("netns_gone").inc()
        return True

    async def sweep(self) -> int:
        """Withdraw every endpoint whose namespace is gone for good; the number reaped.

        Run at start-up before the API serves, so a namespace that died while the daemon was
        down (a reboot, a runtime that never sent DEL) holds no port and no name by then.
        """
        svc = self._svc
        reaped = 0
        for net in svc.state.list_networks():
            if not svc.state.plumbed(net):
                continue  # an IPAM-only network's interfaces are another plugin's
            busy = set(svc.state.inflight.get(net.id, set()))
            eps = [e for e in svc.state.network_endpoints(net) if needs_check(e, busy)]
            lost = await asyncio.to_thread(self.unusable, eps)
            verdicts = await asyncio.to_thread(self.judge, lost)
            async with svc.state.lock(net.id):
                for ep in lost:
                    found = verdicts[endpoint_id(ep)]
                    if svc.state.endpoint(net.id, ep.key) is not ep:
                        continue  # changed meanwhile
                    if found:
                        self.note_held(ep, found)
                    elif await self.withdraw(net, ep):
                        reaped += 1
        return reaped

    async def release_due(self) -> int:
        """Reap step two: delete the records and release the addresses whose grace is over."""
        svc = self._svc
        released = 0
        now = time.time()
        for key, (held, _) in list(self.held.items()):
            if svc.state.endpoint(held.network_id, held.key) is None:
                self.held.pop(key, None)  # detached or its network removed meanwhile
        for net in svc.state.list_networks():
            for ep in due(svc.state.network_endpoints(net), now, self.grace):
                async with svc.state.lock(net.id):
                    if svc.state.endpoint(net.id, ep.key) is not ep:
                        continue  # a DEL, GC or ADD got there first
                    if ep.key in svc.state.inflight.get(net.id, set()):
                        continue
                    await svc.endpoint_ops.remove(net, ep)
                log.info(
                    "reap: released %s of %s/%s on %s (namespace gone since %s)",
                    " ".join(str(a) for a in ep.addresses),
                    ep.container_id[:12],
                    ep.ifname,
                    net.name,
                    time.ctime(ep.gone_since),
                )
                released += 1
        return released

    def status(self, networks: Iterable[Network], endpoints_of: Any) -> dict[str, Any]:
        """What ``/v1/status`` reports: reaped endpoints awaiting release and held ones."""
        nets = {n.id: n for n in networks}
        current = {endpoint_id(ep): ep for net in nets.values() for ep in endpoints_of(net)}
        gone = [
            describe(ep, nets[ep.network_id], self.grace)
            for ep in current.values()
            if ep.state == "gone"
        ]
        held = [
            {
                "network": nets[ep.network_id].name,
                "container_id": ep.container_id,
                "ifname": ep.ifname,
                "netns": ep.netns,
                "netns_inode": ep.netns_inode,
                "evidence": found,
            }
            for key, (ep, found) in list(self.held.items())
            if key in current and current[key].state == "ready"
        ]
        return {"reap_grace": self.grace, "netns_gone": gone, "netns_held": held}
