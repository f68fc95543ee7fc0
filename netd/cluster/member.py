"""This daemon as a member of a cluster: opens the cluster store, joins, syncs, leaves.

:func:`open_cluster_store` is what the daemon calls instead of ``open_store`` when the config
says ``store = "etcd"``; :class:`Member` then registers the node (its lease), starts the
heartbeat and the sync, and answers ``netd node ls/rm``. A node that cannot reach etcd at
start still serves what its local copy holds, and joins as soon as etcd answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, Conflict, StoreError
from ..model import Network
from ..store.etcd import EtcdStore
from .config import ClusterConfig
from .ipsec import IpsecManager
from .nodes import NodeInfo, NodeRegistry
from .store import ClusterStore
from .sync import ClusterSync

if TYPE_CHECKING:
    from ..core.dns_publish import DnsPublisher
    from ..core.endpoints import Endpoints
    from ..core.networks import Networks
    from ..core.state import State

log = logging.getLogger(__name__)
VIEW_FILE = "cluster-view.json"  # the last view of the cluster, under state_dir


def default_node_address() -> str:
    """The source address of this host's default route (ConfigError when there is none)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        try:
            # A route lookup towards TEST-NET-1 (RFC 5737): nothing is sent.
            routes = ipr.route("get", dst="192.0.2.1")
        except Exception:  # no route: the error below says what to set
            routes = []
        for route in routes:
            src = route.get_attr("RTA_PREFSRC")
            if src:
                return str(src)
    raise ConfigError(
        "cluster.node_address is not set and this host has no default route to take it "
        "from; set [cluster] node_address to this node's underlay IPv4 address",
        field="cluster.node_address",
    )


def open_cluster_store(
    cluster: ClusterConfig, state_dir: Path, is_global: Callable[[Network], bool]
) -> ClusterStore:
    """The node's store: SQLite under ``state_dir`` plus etcd; etcd may be down at start."""
    from ..store import open_store

    local = open_store("sqlite", state_dir)
    try:
        etcd = EtcdStore(
            cluster.etcd_endpoints,
            prefix=cluster.etcd_prefix,
            node=cluster.node_name,
            block_prefixlen=cluster.ipam_block_size,
            tolerate_down=True,  # start from the local copy; join when etcd answers
            ca_file=cluster.tls["ca_file"],
            cert_file=cluster.tls["cert_file"],
            key_file=cluster.tls["key_file"],
        )
    except BaseException:
        local.close()
        raise
    return ClusterStore(local, etcd, cluster.node_name, is_global)


class Member:
    """Registration, heartbeat and sync of this node; the node list for the API."""

    def __init__(
        self, cluster: ClusterConfig, store: ClusterStore, address: str, state_dir: Path
    ) -> None:
        self.config = cluster
        self.store = store
        self.name = cluster.node_name
        self.address = address
        self.registry = NodeRegistry(store.etcd, self.name, address, cluster.node_ttl)
        self.sync: ClusterSync | None = None
        self.view_cache = state_dir / VIEW_FILE
        self._task: asyncio.Task[None] | None = None

    async def start(
        self, state: State, networks: Networks, publisher: DnsPublisher, endpoints: Endpoints
    ) -> None:
        """Join (or keep trying in the background) and start syncing this node's ``state``."""
        if self.store.offline:
            # etcd did not answer at start: do not wait for it again here; the heartbeat
            # thread registers the node as soon as it answers.
            log.warning("node %s: etcd unreachable; joining when it answers", self.name)
        else:
            try:
                await asyncio.to_thread(self.registry.register)
            except StoreError as e:
                log.warning("node %s: cannot register now (%s); retrying with the heartbeat",
                            self.name, e)  # fmt: skip
        self.registry.start()
        self.sync = ClusterSync(
            state=state,
            store=self.store,
            networks=networks,
            publisher=publisher,
            registry=self.registry,
            interval=self.config.resync_interval,
            grace=self.config.node_grace,
            remove_endpoint=endpoints.remove,
            cache=self.view_cache,
            ipsec=IpsecManager(self.store.etcd, self.config.ipsec_rotate),
        )
        self._task = asyncio.create_task(self.sync.run())
        # Serve with the cluster's endpoints known when etcd answers quickly; never wait long:
        # without etcd, the view saved by the last daemon serves until it answers.
        if not await self.sync.wait_synced(timeout=3.0):
            await self.sync.restore()

    async def stop(self) -> None:
        """Stop syncing and heartbeating (the lease expires by itself)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.sync is not None:
            await self.sync.save()
        await asyncio.to_thread(self.registry.stop)

    async def nodes(self) -> list[NodeInfo]:
        """Every node of the cluster (StoreError naming etcd when it does not answer)."""
        return await asyncio.to_thread(self.registry.list)

    async def remove_node(self, name: str, *, force: bool = False) -> NodeInfo:
        """Forget a node and free what it held; then converge at once."""
        if name == self.name and not force:
            # A refusal, not a fault: 409 naming the node.
            raise Conflict(
                f"removing node {name!r}: that is this node; use --force",
                field="name",
                value=name,
            )
        node = await asyncio.to_thread(self.registry.remove, name, force=force)
        if self.sync is not None:
            await self.sync.sync_once()
        return node
