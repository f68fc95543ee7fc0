"""The store of a cluster node: global networks in etcd, everything else on the node's disk.

:class:`ClusterStore` implements :class:`netd.store.base.Store` over two engines. A network
whose driver spans hosts (``Capabilities.scope == "global"``, the overlay) and its endpoints
live in etcd, where every node sees them and etcd's transactions keep names, subnets, VNIs and
addresses unique across the cluster. Every other network stays in the node's SQLite store,
local to the node as on a single host.

The local store also keeps a copy of the global networks and of *this node's* endpoints on
them, written after etcd accepted each change. The copy is what start-up falls back on when
etcd is unreachable, so a restarted daemon keeps serving the containers it runs (the data plane
never depends on the control plane being up; docs/multi-host.md). etcd stays the truth: when it
answers, its records win and stale copies are dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import NotFound, StoreError, StoreUnreachable
from ..model import Endpoint, IPAddress, Network
from ..store.base import Store
from ..store.etcd import EtcdStore
from ..store.health import HealthReport, StoreHealth

log = logging.getLogger(__name__)


class ClusterStore:
    """The Store protocol for a cluster node: etcd for global networks, SQLite for the rest."""

    def __init__(
        self, local: Store, etcd: EtcdStore, node: str, is_global: Callable[[Network], bool]
    ) -> None:
        self.local = local
        self.etcd = etcd
        self.node = node
        self.is_global = is_global
        self.fresh = local.fresh
        self.health: StoreHealth = local.health  # the local engine records every change
        self._global: dict[str, Network] = {}  # id → record, of every global network known
        self._copied: set[str] = set()  # ids of global networks with a local copy
        # etcd did not answer the start-up listing: the rest of start-up reads the copy (each
        # etcd call would wait its whole bound again). Cleared by the first sync that works.
        self.offline = False
        # Background etcd writes of an attach's records (put_endpoint).
        # Per endpoint, writes stay in order (each waits for the one before, _settle); across
        # endpoints they run in parallel, as the attaches do.
        self._writer = ThreadPoolExecutor(max_workers=16, thread_name_prefix="netd-etcd")
        self._pending: dict[tuple[str, str, str], Future[None] | _Later] = {}
        self._last: dict[tuple[str, str, str], str] = {}  # the state last written to etcd
        # An attach's record as sent to etcd ahead of its kernel work (put_endpoint).
        self._sent: dict[tuple[str, str, str], Endpoint] = {}
        self._lock = threading.Lock()

    def global_network(self, network_id: str) -> Network | None:
        """The record of a global network this store knows, else None."""
        return self._global.get(network_id)

    # --- networks ---------------------------------------------------------------------------

    def list_networks(self) -> list[Network]:
        """Local networks, then the global ones: etcd's when it answers, else the local copy."""
        mine = self.local.list_networks()
        local = [n for n in mine if not self.is_global(n)]
        copies = [n for n in mine if self.is_global(n)]
        try:
            shared = self.etcd.list_networks()
        except StoreError as e:
            log.warning("etcd unreachable at start (%s): global networks from the local copy", e)
            self.offline = True  # the other start-up reads go to the copy without waiting
            shared = copies
        else:
            self.offline = False
            live = {n.id for n in shared}
            for stale in (n for n in copies if n.id not in live):
                log.info("network %s was removed from the cluster: dropping its copy", stale.name)
                self._drop_copy(stale.id)
        self._global = {n.id: n for n in shared}
        return [*local, *shared]

    def create_network(self, network: Network) -> None:
        """A global network in etcd (then its local copy), a local one on disk."""
        if not self.is_global(network):
            self.local.create_network(network)
            return
        self.etcd.create_network(network)
        self._global[network.id] = network
        self.copy_network(network)

    def delete_network(self, network_id: str) -> None:
        """Remove from etcd (global) or from disk (local); the copy follows etcd."""
        if network_id not in self._global:
            self.local.delete_network(network_id)
            return
        self.etcd.delete_network(network_id)
        self._global.pop(network_id, None)
        self._drop_copy(network_id)

    def copy_network(self, network: Network) -> None:
        """Keep a local copy of a global network (a node learns of networks made elsewhere)."""
        self._global[network.id] = network
        if network.id in self._copied:
            return
        try:
            if all(n.id != network.id for n in self.local.list_networks()):
                self.local.create_network(network)
            self._copied.add(network.id)
        except Exception as e:  # the copy is a fallback: losing it costs no correctness
            log.warning("keeping a local copy of network %s failed: %s", network.name, e)

    def forget_network(self, network_id: str) -> None:
        """A global network is gone from the cluster: drop what this node knew of it."""
        self._global.pop(network_id, None)
        self._drop_copy(network_id)

    def _drop_copy(self, network_id: str) -> None:
        self._copied.discard(network_id)
        try:
            for ep in self.local.list_endpoints(network_id):
                self.local.delete_endpoint(network_id, ep.container_id, ep.ifname)
            self.local.delete_network(network_id)
        except NotFound:
            pass
        except Exception as e:
            log.warning("dropping the local copy of network %s failed: %s", network_id, e)

    # --- endpoints --------------------------------------------------------------------------

    def list_endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        """Endpoints this node runs: of global networks, those etcd says are this node's (the
        local copy when etcd is unreachable); other nodes' endpoints come from the cluster
        view, not from here."""
        if network_id is not None and network_id not in self._global:
            return self.local.list_endpoints(network_id)
        if network_id is None:
            local = [e for e in self.local.list_endpoints() if e.network_id not in self._global]
            return local + [e for nid in self._global for e in self.list_endpoints(nid)]
        if self.offline:
            return self.local.list_endpoints(network_id)
        try:
            found = self.etcd.list_endpoints(network_id)
        except StoreError as e:
            log.warning("etcd unreachable (%s): endpoints of %s from the local copy", e, network_id)
            return self.local.list_endpoints(network_id)
        mine = [e for e in found if e.node == self.node]
        # An attach whose "ready" reached the copy but not etcd (the daemon stopped between
        # the two, see put_endpoint) finished: the copy's record wins, and etcd gets it now.
        copies = {e.key: e for e in self.local.list_endpoints(network_id)}
        out = []
        for ep in mine:
            copy = copies.get(ep.key)
            if ep.state == "creating" and copy is not None and copy.state == "ready":
                log.info("endpoint %s/%s: ready in the local copy, creating in etcd; recording "
                         "it ready", ep.container_id[:12], ep.ifname)  # fmt: skip
                try:
                    self.etcd.put_endpoint(copy, {})
                except StoreError as e:
                    log.warning("recording it ready in etcd failed (%s); the sync retries", e)
                ep = copy
            elif ep.state == "ready" and copy is not None and copy.state == "creating":
                # The attach's one etcd write landed, its kernel work did not finish (the
                # daemon stopped in between, see put_endpoint): an interrupted attach,
                # which start-up undoes (and with it etcd's record).
                log.info("endpoint %s/%s: ready in etcd, creating in the local copy: an "
                         "interrupted attach", ep.container_id[:12], ep.ifname)  # fmt: skip
                ep = copy
            out.append(ep)
        return out

    def put_endpoint(self, endpoint: Endpoint, cursors: dict[str, IPAddress]) -> None:
        """etcd first for a global network (it decides), then the local copy.

        One exception, for speed: an attach writes etcd once. Its "creating" record goes to
        the local copy, and to etcd already as the "ready" record it will become, sent at
        once and answered while the interface is made (the core completes the record before
        the kernel work, netd.core.endpoints; EtcdStore.begin_put_endpoint). The attach's
        "ready" then waits for that write (and fails with it: the kernel work is undone and
        the attach picks again) and goes to the local copy only. So the ADD answers after one
        etcd round trip overlapped with the kernel work, and every node sees one change per
        attach.

        Other nodes may so serve the endpoint a few milliseconds before its ADD answers, as
        this node's DNS does (the container runs nothing before). A crash in between leaves
        etcd saying "ready" and the copy "creating": start-up believes the copy
        (:meth:`list_endpoints`) and undoes the attach.
        """
        net = self._global.get(endpoint.network_id)
        if net is None:
            self.local.put_endpoint(endpoint, cursors)
            return
        key = (endpoint.network_id, endpoint.container_id, endpoint.ifname)
        self._settle(key)  # the background write of this endpoint: its failure is ours
        fresh = endpoint.state == "creating" and key not in self._last
        if fresh and self._copy(net, endpoint, cursors):
            served = dataclasses.replace(endpoint, state="ready")
            # Sent now, its answer read by the "ready" (_settle): etcd works on it while the
            # interface is made, and no thread of this process competes with that work.
            later = _Later(self.etcd.begin_put_endpoint(served))
            with self._lock:
                self._last[key] = "ready"
                self._sent[key] = served
                self._pending[key] = later
            return
        with self._lock:
            sent = self._sent.pop(key, None)
        ahead = endpoint.state == "ready" and sent is not None
        if ahead and self._copy(net, endpoint, cursors):
            if endpoint != sent:  # the driver changed the record after all: etcd follows
                with self._lock:
                    self._pending[key] = self._writer.submit(self._put_later, endpoint)
            return
        try:
            self.etcd.put_endpoint(endpoint, {})  # cursors: see get_cursors
        except StoreUnreachable as e:
            if endpoint.state != "deleting":
                raise
            # A detach (a CNI DEL) must not depend on etcd: runtimes do not retry it. The node
            # tears down what it has; the record etcd keeps is this node's stray, deleted by
            # the sync once etcd answers (ClusterSync._drop_strays).
            log.warning("detaching %s/%s while etcd is unreachable (%s): etcd's record is "
                        "deleted when it answers", endpoint.container_id[:12], endpoint.ifname,
                        e)  # fmt: skip
        else:
            with self._lock:
                self._last[key] = endpoint.state
        self._copy(net, endpoint, cursors)

    def _copy(
        self, net: Network, endpoint: Endpoint, cursors: dict[str, IPAddress] | None = None
    ) -> bool:
        """Write the local copy of an endpoint of a global network (and the IPAM cursors the
        attach moved); whether it worked."""
        try:
            self.copy_network(net)
            self.local.put_endpoint(endpoint, cursors or {})
        except Exception as e:
            log.warning(
                "local copy of endpoint %s/%s failed: %s",
                endpoint.container_id[:12],
                endpoint.ifname,
                e,
            )
            return False
        return True

    def _put_later(self, endpoint: Endpoint) -> None:
        """The background etcd write of a "ready" record (the writer thread)."""
        try:
            self.etcd.put_endpoint(endpoint, {})
        except Exception as e:  # the sync re-writes it (ClusterSync._fence): logged only
            log.warning(
                "recording endpoint %s/%s ready in etcd failed (%s); retried by the sync",
                endpoint.container_id[:12],
                endpoint.ifname,
                e,
            )

    def _settle(self, key: tuple[str, str, str], *, quiet: bool = False) -> None:
        """Wait for a background write of the same endpoint, so writes stay in order; its
        failure is raised here (``quiet``: only waited for)."""
        with self._lock:
            pending = self._pending.pop(key, None)
        if pending is None:
            return
        try:
            pending.result()
        except Exception:
            with self._lock:
                self._last.pop(key, None)  # etcd has no record of ours for it
                self._sent.pop(key, None)
            if not quiet:
                raise

    def settle_all(self) -> None:
        """Wait for every background write (tests, close)."""
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for future in pending:
            future.result()

    def delete_endpoint(self, network_id: str, container_id: str, ifname: str) -> bool:
        """Remove from etcd (global) or disk; the copy follows etcd."""
        if network_id not in self._global:
            return self.local.delete_endpoint(network_id, container_id, ifname)
        key = (network_id, container_id, ifname)
        self._settle(key, quiet=True)  # a failed "creating" is what is being undone
        with self._lock:
            self._last.pop(key, None)
            self._sent.pop(key, None)
        try:
            existed = self.etcd.delete_endpoint(network_id, container_id, ifname)
        except StoreUnreachable:
            existed = True  # see put_endpoint: the sync deletes etcd's record later
        try:
            self.local.delete_endpoint(network_id, container_id, ifname)
        except Exception as e:
            log.warning("dropping the local copy of %s/%s failed: %s", container_id, ifname, e)
        return existed

    def get_cursors(self, network_id: str) -> dict[str, IPAddress]:
        """IPAM cursors, from the node's disk for every network.

        On a global network each cursor belongs to one block (``BlockAllocator``), so to the
        node that owns the block and allocates in it: it is this node's business, kept in its
        local copy, not in etcd, where every attach would write one more key and send one
        more event to every node. A block that changes hands starts from its first address."""
        return self.local.get_cursors(network_id)

    # --- lifetime ---------------------------------------------------------------------------

    def probe(self) -> HealthReport:
        """The local engine's write probe: local networks keep working without etcd, and a
        global operation reports etcd's trouble itself (CNI code 11, naming etcd)."""
        return self.local.probe()

    def close(self) -> None:
        """Finish background writes, then close both engines."""
        self._writer.shutdown(wait=True)
        try:
            self.etcd.close()
        finally:
            self.local.close()


class _Later:
    """A pipelined etcd write (EtcdStore.begin_put_endpoint) in the shape of a Future:
    :meth:`result` finishes it once (reads etcd's answer) and gives that outcome every time."""

    def __init__(self, finish: Callable[[], None]) -> None:
        self._finish: Callable[[], None] | None = finish
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def result(self) -> None:
        with self._lock:
            finish, self._finish = self._finish, None
            if finish is not None:
                try:
                    finish()
                except BaseException as e:
                    self._error = e
            if self._error is not None:
                raise self._error
