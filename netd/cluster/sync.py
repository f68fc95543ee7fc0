"""This node's view of the cluster, kept current from etcd: networks, peers' endpoints, nodes.

A watch on netd's prefix (etcd3gw's :class:`~etcd3gw.watch.Watcher`) wakes the sync whenever
something that matters changes; the sync then reads the whole cluster view in one read
transaction (networks, endpoints, live nodes, IPAM blocks, at one revision) and converges the
node to it. Reading everything rather than applying events one by one makes every pass
correct on its own: a missed or reordered event, a watch broken by an etcd restart or a
partition costs at most one ``resync_interval`` (the periodic pass), never a wrong state.
Calico's syncer and flannel's subnet watcher work the same way (watch + periodic list).

Converging means, per global network:
- a network created on another node is served here (kernel objects, firewall, DNS);
  one removed elsewhere is torn down here;
- other nodes' ready endpoints, on nodes whose lease is alive, are the network's remote
  endpoints: their names are served by this node's DNS, their addresses skipped by IPAM, and
  the overlay driver programs forwarding (FDB) and neighbour entries to them; a node that goes
  down loses all three within ``node_ttl``.

While etcd is unreachable nothing is torn down: the last view stays in force (names keep
resolving, packets keep flowing) and the pass retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..drivers.overlay_peers import RemotePeer
from ..errors import NetdError, StoreCorrupt, StoreError
from ..ipam.blocks import BlockAllocator
from ..kernel.container import forget_neighbours
from ..model import Endpoint, Network
from ..store import etcd_txn as t
from .view import ClusterView, apply_event, load_view, read_view, save_view, text_of, vtep_of

if TYPE_CHECKING:
    from ..core.dns_publish import DnsPublisher
    from ..core.networks import Networks
    from ..core.state import State
    from .ipsec import IpsecManager
    from .nodes import NodeRegistry
    from .store import ClusterStore

log = logging.getLogger(__name__)

# Keys whose changes never change what a node serves: no pass for them.
QUIET = ("nodes/", "probe", "cursors/", "meta/")
REAP_EVERY = 30.0  # seconds between looks for nodes down longer than the grace period
SAVE_EVERY = 2.0  # seconds between saves of the view (and one when the daemon stops)
READY = '"state":"ready"'  # in the JSON of a ready endpoint (netd.store.etcd._dump)


def _stop_all(watchers: Iterable[Any]) -> None:
    """Stop etcd3gw watchers (best effort: one on a dead connection may fail to stop)."""
    for watcher in watchers:
        try:
            watcher.stop()
        except Exception:
            log.debug("stopping an etcd watch", exc_info=True)


def _served(doc: str) -> bool:
    """Whether an endpoint document (as etcd holds it; "" for none) is one a node serves:
    ready, or from a writer that did not record a state (read as ready, model.py)."""
    return bool(doc) and (READY in doc or '"state":' not in doc)


@runtime_checkable
class PeerProgrammer(Protocol):
    """A driver that forwards to other nodes (the overlay): told the remote endpoints."""

    def sync_remote(
        self, network: Network, peers: Sequence[RemotePeer], *, changes_only: bool = False
    ) -> None:
        """Make forwarding to exactly ``peers`` (blocking; a worker thread calls it);
        ``changes_only``: against what it last programmed, not the kernel's entries."""
        ...


class ClusterSync:
    """Watch etcd and converge this node to the cluster view (see the module docstring)."""

    def __init__(
        self,
        *,
        state: State,
        store: ClusterStore,
        networks: Networks,
        publisher: DnsPublisher,
        registry: NodeRegistry,
        interval: float,
        grace: float,
        remove_endpoint: Callable[[Network, Endpoint], Awaitable[None]],
        cache: Path | None = None,
        ipsec: IpsecManager | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.etcd = store.etcd
        self.networks = networks
        self.publisher = publisher
        self.registry = registry
        self.node = store.node
        self.interval = interval
        self.grace = grace
        self.view = ClusterView()
        self.passes = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: list[Any] | None = None  # the watches of _start_watch
        self._watch_lock = threading.Lock()
        self._failing = False
        self._synced = asyncio.Event()
        self._reaped_at = 0.0
        self._trusted: dict[str, str] = {}  # the nodes alive in the last trusted view
        self._seen_alive: dict[str, str] = {}  # the nodes alive as etcd last said
        # Watch events not yet in the view: (mod revision, key below the prefix, value or
        # None for a delete); appended by the watcher thread, taken by the loop.
        self._events: deque[tuple[int, str, str | None]] = deque()
        self._full_at = 0.0  # monotonic time of the last whole read
        self._mine = f'"node":"{self.node}"'  # in the JSON of this node's endpoints
        self.cache = cache  # where the last view is saved, for a start while etcd is down
        self._saved = 0
        self._saved_at = 0.0
        self._remove_endpoint = remove_endpoint  # Endpoints.remove (network lock held)
        self._missing: dict[tuple[str, ...], int] = {}  # strikes: own records lost or stray
        self.ipsec = ipsec  # encrypted overlays (netd.cluster.ipsec); None: not managed here
        self._ipsec_ok = ipsec is None  # the last IPsec pass succeeded
        self._programmed: set[str] = set()  # networks whose peers the last try programmed

    # --- the watch --------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        """A watch event (watcher thread): queue it for the view, and wake the sync unless it
        is this node's own change."""
        kv = event.get("kv", {})
        key = text_of(kv.get("key", b""))
        rest = key[len(self.etcd.prefix) :]
        # Addresses change with their endpoint, in the same transaction: the endpoint's event
        # is enough. The others never change what a node serves.
        if rest.startswith(QUIET) or rest.startswith("allocations/"):
            return
        value = text_of(kv.get("value") or b"")
        before = text_of(event.get("prev_kv", {}).get("value") or b"")
        deleted = event.get("type") == "DELETE"
        self._events.append((int(kv.get("mod_revision", 0)), rest, None if deleted else value))
        # This node's own changes are already in its state: they go into the view (fencing
        # reads it) but need no pass of their own.
        if rest.startswith("endpoints/"):
            if self._mine in (value or before):
                return
            # Only other nodes' ready endpoints are served here (names, forwarding, IPAM's
            # view): an attach's "creating" record, or the removal of one that never became
            # ready, changes nothing until its "ready" write, so it wakes nobody (half of the
            # passes an attach elsewhere used to cost every node).
            if not _served(value) and not _served(before):
                return
        if rest.startswith("blocks/") and (value or before) == self.node:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def _start_watch(self, revision: int) -> None:
        """(Re)start the watch from ``revision`` + 1 on the member that answers.

        Two watches, one on each side of ``allocations/``: every key under the prefix but the
        address keys, which change with their endpoint in the same transaction (the
        endpoint's event says it all). Watching them would cost etcd an event (and the
        previous value) per node for every attach and detach, and every node a decode, to
        be thrown away."""
        from etcd3gw.watch import Watcher

        self._stop_watch()
        prefix = self.etcd.prefix
        skipped = prefix + "allocations/"
        ranges = ((prefix, skipped), (t.prefix_end(skipped), t.prefix_end(prefix)))

        def make(client: Any) -> list[Any]:
            made: list[Any] = []
            try:
                for key, end in ranges:
                    made.append(
                        Watcher(
                            client,
                            key,
                            self._on_event,
                            range_end=end,
                            start_revision=revision + 1,
                            prev_kv=True,  # a delete says whose record it was
                        )
                    )
            except BaseException:
                _stop_all(made)
                raise
            return made

        with self._watch_lock:
            self._watcher = self.etcd.call("watching the cluster", make)

    def _stop_watch(self) -> None:
        with self._watch_lock:
            watchers, self._watcher = self._watcher, None
        _stop_all(watchers or [])

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Converge now, then on every watch event and every ``interval`` s, until cancelled."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                await self.sync_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
        finally:
            await asyncio.to_thread(self._stop_watch)

    async def wait_synced(self, timeout: float) -> bool:
        """Whether a pass has succeeded within ``timeout`` s (start-up waits for one)."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def sync_once(self, *, full: bool | None = None) -> bool:
        """One pass: converge to the view; False (logged once) if etcd did not answer.

        The view is read whole (one read transaction) at start, after a failure, when the
        watch is (re)started and every ``interval`` seconds; in between it follows the
        watch's events, so a change costs each node the documents that changed, not a read of
        every endpoint of the cluster (list and watch, as Kubernetes informers do).
        """
        if full is None:
            full = (
                self._watcher is None
                or self._failing
                or time.monotonic() - self._full_at >= self.interval
            )
        if not full:
            view = self._follow_events()
            if view is not None:
                await self.apply(view)
                self.passes += 1
                return True
        try:
            view = await asyncio.to_thread(read_view, self.etcd)
            self._full_at = time.monotonic()
            if self._watcher is None:
                self._events.clear()  # the read has everything up to its revision
                await asyncio.to_thread(self._start_watch, view.revision)
        except StoreError as e:
            if not self._failing:
                log.warning("cluster sync: %s; serving the last known view", e)
            self._failing = True
            await asyncio.to_thread(self._stop_watch)  # restarted from a fresh revision
            return False
        if self._failing:
            log.info("cluster sync: etcd answers again")
        self._failing = False
        self.store.offline = False
        await self.apply(view)
        self.passes += 1
        self._synced.set()
        return True

    def _follow_events(self) -> ClusterView | None:
        """The current view with the queued watch events applied; None if one could not be
        read (the caller then reads the view whole)."""
        view = ClusterView(
            revision=self.view.revision,
            networks=dict(self.view.networks),
            endpoints={k: list(v) for k, v in self.view.endpoints.items()},
            alive=dict(self._seen_alive),
            blocks={k: dict(v) for k, v in self.view.blocks.items()},
            complete=False,
        )
        while self._events:
            revision, rest, value = self._events.popleft()
            if revision and revision <= view.revision:
                continue  # already in the view (a whole read after it was queued)
            try:
                apply_event(self.etcd, view, rest, value)
            except (StoreCorrupt, ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning("cluster sync: watch event for %s unusable (%s): reading all", rest, e)
                return None
            view.revision = max(view.revision, revision)
        return view

    def _live(self, view: ClusterView) -> dict[str, str]:
        """The nodes to serve as alive: the view's, plus those alive before while this node's
        own lease is gone and for one TTL after it re-joined. An etcd outage longer than the
        TTL expires every lease at once; without this, every node would withdraw every other
        node's names and forwarding for the seconds it takes them to re-join, a blip after
        every long outage. (A node that cannot keep its own lease cannot judge the others.)"""
        own_lease_lost = self.node not in view.alive  # the outage expired ours too
        if own_lease_lost or time.monotonic() - self.registry.rejoined_at < self.registry.ttl:
            return {**self._trusted, **view.alive}
        self._trusted = dict(view.alive)
        return view.alive

    async def apply(self, view: ClusterView) -> None:
        """Converge this node to ``view``."""
        self._seen_alive = dict(view.alive)  # as etcd has it, before _live adds to it
        view.alive = self._live(view)
        self.view = view
        state = self.state
        for net in view.networks.values():
            if net.id not in state.networks and net.driver in state.drivers:
                self.store.copy_network(net)
                try:
                    await self.networks.adopt(net)
                except NetdError as e:
                    log.error("cluster network %s: cannot serve it here: %s", net.name, e)
        # IPsec before forwarding: an encrypted network's peers are programmed only once its
        # packets to them are marked for ESP (fail closed, netd.cluster.ipsec).
        await self._sync_ipsec(view)
        released = False
        for net in list(state.networks.values()):
            if state.caps(net).scope != "global":
                continue
            if net.id not in view.networks:
                self._programmed.discard(net.id)
                if await self.networks.release(net):
                    self.store.forget_network(net.id)
                    released = True
                continue
            await self._converge_network(net, view)
        if released:
            await self._sync_ipsec(view)  # drop what the removed networks needed
        if self._reap_due():  # checked here: most passes need no worker thread for it
            await asyncio.to_thread(self._reap_down_nodes, view)
        if time.monotonic() - self._saved_at >= SAVE_EVERY:
            await self.save()

    async def save(self) -> None:
        """Save the current view for a start while etcd is down (at most every SAVE_EVERY
        seconds during passes: a burst of attaches elsewhere costs one write, not one each)."""
        view = self.view
        if self.cache is not None and view.revision != self._saved:
            await asyncio.to_thread(save_view, self.cache, view)
            self._saved = view.revision
        self._saved_at = time.monotonic()

    async def restore(self) -> bool:
        """Serve the last view this node saved (start-up while etcd does not answer): other
        nodes' names resolve and forwarding to them is programmed as when the daemon stopped.
        Nothing is fenced or torn down from an old view. False if there is none."""
        if self.cache is None:
            return False
        view = await asyncio.to_thread(load_view, self.cache)
        if view is None:
            return False
        log.warning(
            "cluster: etcd does not answer; serving the last known view (revision %d) until "
            "it does",
            view.revision,
        )
        self.view = view
        for net in list(self.state.networks.values()):
            if self.state.caps(net).scope == "global" and net.id in view.networks:
                await self._converge_network(net, view, fence=False)
        return True

    async def _converge_network(self, net: Network, view: ClusterView, fence: bool = True) -> None:
        """Remote endpoints of one global network: IPAM, DNS and forwarding follow them."""
        state = self.state
        remote = [
            ep
            for ep in view.endpoints.get(net.id, [])
            if ep.node and ep.node != self.node and ep.node in view.alive and ep.state == "ready"
        ]
        before = state.remote.get(net.id, {})
        after = {(e.node, *e.key): e for e in remote}
        changed = before.keys() != after.keys() or any(before[k] != after[k] for k in after)
        blocks = view.blocks.get(net.id, {})
        allocator = state.ipam.get(net.id)
        moved = isinstance(allocator, BlockAllocator) and allocator.owners != blocks
        if changed or moved:
            async with state.lock(net.id):
                if net.id not in state.networks:
                    return
                state.set_remote(net, remote, blocks)
            await self._forget_moved(net, before.values(), remote)
        driver = state.driver(net)
        # An encrypted network's peers wait until its packets to them are marked for ESP.
        held = net.options.get("encrypted") == "true" and not self._ipsec_ok
        if held:
            self._programmed.discard(net.id)
        # On a whole read, changed or not: the entries are the kernel's to lose, and an
        # unchanged set costs one netlink dump. Between whole reads only when the peers
        # changed (or the last programming failed or was held): a device the reconciler
        # re-creates gets its entries back from the driver itself (OverlayDriver remembers
        # them), so an event pass need not dump every entry again for each remote attach.
        due = changed or view.complete or net.id not in self._programmed
        if isinstance(driver, PeerProgrammer) and not held and due:
            peers = [
                RemotePeer(ip=a.ip, mac=ep.mac.lower(), vtep=vtep)
                for ep in remote
                if ep.mac and (vtep := vtep_of(view.alive[ep.node])) is not None
                for a in ep.addresses
            ]
            # Between whole reads only the change is sent (no dump of every entry).
            sync = partial(driver.sync_remote, changes_only=not view.complete)
            try:
                await asyncio.to_thread(sync, net, peers)
            except NetdError as e:
                self._programmed.discard(net.id)
                log.error("network %s: programming forwarding to peers failed: %s", net.name, e)
            else:
                self._programmed.add(net.id)
        if changed:
            await self.publisher.publish(net)
        if fence and view.complete:
            # Only a whole read may say a record is missing: the watch may not have delivered
            # this node's latest writes yet.
            await self._fence(net, view)

    # --- encrypted overlays (netd.cluster.ipsec): one call per pass --------------------------

    async def _sync_ipsec(self, view: ClusterView) -> None:
        """IPsec between this node and every live node, for the encrypted networks served."""
        if self.ipsec is None:
            return
        if self.node not in view.alive:  # this node's own lease lapsed: keep what is there
            return
        local = vtep_of(view.alive[self.node])
        vnis = {
            int(net.options["vni"])
            for net in self.state.networks.values()
            if net.options.get("encrypted") == "true" and net.options.get("vni", "").isdigit()
        }
        peers = {
            vtep
            for name, address in view.alive.items()
            if name != self.node and (vtep := vtep_of(address)) is not None
        }
        if local is None:
            self._ipsec_ok = False
            return
        if not vnis and self.ipsec.idle:  # no encrypted network, nothing left: no thread hop
            self._ipsec_ok = True
            return
        try:
            await asyncio.to_thread(self.ipsec.sync, vnis, local, peers)
        except NetdError as e:
            log.error("encrypted overlays: %s", e)
            self._ipsec_ok = False
        else:
            self._ipsec_ok = True

    async def _forget_moved(
        self, net: Network, before: Iterable[Endpoint], after: Iterable[Endpoint]
    ) -> None:
        """Local containers forget the MAC of a remote address that went away or moved, so
        their next packet asks the node's VXLAN proxy again (kernel.container)."""

        def macs(eps: Iterable[Endpoint]) -> dict[str, str]:
            return {str(a.ip): (e.mac or "").lower() for e in eps for a in e.addresses}

        old, new = macs(before), macs(after)
        stale = {ip: mac for ip, mac in old.items() if mac and new.get(ip) != mac}
        if not stale:
            return
        for ep in self.state.network_endpoints(net):
            if ep.state == "ready":
                await asyncio.to_thread(
                    forget_neighbours, ep.netns, ep.netns_inode, ep.ifname, stale
                )

    async def _fence(self, net: Network, view: ClusterView) -> None:
        """Withdraw this node's endpoints that etcd no longer has (the node was removed or
        reaped while partitioned away): their addresses may be another node's by now.

        Missing from two views in a row, since a view read just before an attach recorded
        its endpoint would miss it once; the second read starts after the endpoint was ready
        here, so its record was in etcd by then.
        """
        state = self.state
        there = {e.key: e for e in view.endpoints.get(net.id, []) if e.node == self.node}
        for ep in list(state.endpoints.get(net.id, {}).values()):
            mark = (net.id, *ep.key)
            recorded = there.get(ep.key)
            if recorded is not None and recorded.state == "creating" and state.settled(ep):
                await self._record_ready(net, ep)
                continue
            if recorded is not None or not state.settled(ep):
                self._missing.pop(mark, None)
                continue
            self._missing[mark] = strikes = self._missing.get(mark, 0) + 1
            if strikes < 2:
                continue
            self._missing.pop(mark, None)
            log.warning(
                "endpoint %s/%s on %s is no longer this node's in the cluster (node removed or "
                "reaped while unreachable): removing it here",
                ep.container_id[:12],
                ep.ifname,
                net.name,
            )
            async with state.lock(net.id):
                if state.still_current(net.id, ep):
                    await self._remove_endpoint(net, ep)
        await self._drop_strays(net, view)

    async def _record_ready(self, net: Network, ep: Endpoint) -> None:
        """An endpoint ready here that etcd still has "creating" (its background "ready"
        write failed while etcd was away): write it again, two views in a row apart."""
        mark = ("ready", net.id, *ep.key)
        self._missing[mark] = strikes = self._missing.get(mark, 0) + 1
        if strikes < 2:
            return
        self._missing.pop(mark, None)
        async with self.state.lock(net.id):
            if not self.state.still_current(net.id, ep):
                return
            try:
                await asyncio.to_thread(self.store.put_endpoint, ep, {})
            except NetdError as e:
                log.warning("recording %s/%s ready in etcd: %s", ep.container_id[:12], ep.ifname, e)

    async def _drop_strays(self, net: Network, view: ClusterView) -> None:
        """Delete records etcd holds as this node's that this node does not have: an attach
        whose etcd write timed out yet was applied, then failed here while etcd was away.
        Their addresses would stay taken for good otherwise. Two views in a row, and never
        one being changed by a request (in flight) or one the node knows."""
        state = self.state
        known = state.endpoints.get(net.id, {})
        busy = state.inflight.get(net.id, set())
        for ep in view.endpoints.get(net.id, []):
            mark = ("stray", net.id, *ep.key)
            if ep.node != self.node or ep.key in known or ep.key in busy:
                self._missing.pop(mark, None)
                continue
            self._missing[mark] = strikes = self._missing.get(mark, 0) + 1
            if strikes < 2:
                continue
            self._missing.pop(mark, None)
            async with state.lock(net.id):
                if ep.key in state.endpoints.get(net.id, {}) or ep.key in busy:
                    continue
                log.warning(
                    "etcd holds endpoint %s/%s on %s as this node's, but this node has no such "
                    "endpoint: deleting the record and freeing %s",
                    ep.container_id[:12],
                    ep.ifname,
                    net.name,
                    ", ".join(str(a.ip) for a in ep.addresses),
                )
                try:
                    await asyncio.to_thread(
                        self.store.delete_endpoint, net.id, ep.container_id, ep.ifname
                    )
                except NetdError as e:
                    log.warning("deleting the stray record: %s", e)

    def _reap_due(self) -> bool:
        """Whether a look for nodes down longer than the grace period is due."""
        every = min(REAP_EVERY, max(1.0, self.grace / 4))
        return self.grace > 0 and time.time() - self._reaped_at >= every

    def _reap_down_nodes(self, view: ClusterView) -> None:
        """Free what nodes down longer than the grace period held (blocking)."""
        if not self._reap_due():
            return
        now = self._reaped_at = time.time()
        try:
            nodes = self.registry.list()
        except StoreError:
            return
        for node in nodes:
            if node.state == "down" and node.heartbeat and now - node.heartbeat > self.grace:
                if not node.endpoints and not node.blocks:
                    continue
                log.warning(
                    "node %s down for %.0f s (grace %.0f s): freeing its endpoints and blocks",
                    node.name,
                    now - node.heartbeat,
                    self.grace,
                )
                try:
                    self.registry.remove(node.name, force=True, keep_record=True)
                except NetdError as e:
                    log.warning("freeing node %s: %s", node.name, e)
