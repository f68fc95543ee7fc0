"""Nodes of the cluster: this node's registration and liveness lease, and the list of all.

Each node keeps two keys in etcd (docs/multi-host.md)::

    <prefix>nodes/<name>   {"name", "address", "registered", "heartbeat"}   persistent
    <prefix>alive/<name>   {"address", "since"}                              bound to a lease

The lease has ``node_ttl`` seconds and is kept alive every third of it, so the ``alive`` key
disappears by itself ``node_ttl`` seconds after the node stops (a crash, a lost host or a
partition): every other node then shows it ``down``, withdraws its names and forwarding
entries, as Kubernetes does with node leases. ``heartbeat`` in the persistent record is
refreshed every 30 s (or 3 times the TTL if shorter; it tells an operator when the node was last
heard of, and how long a down node has been down, for ``node_grace``); the lease is the
liveness itself.

Nothing here runs on the event loop: every call is blocking and bounded by the store's
deadline.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import Conflict, NotFound, StoreError
from ..model import endpoint_from_json
from ..store import etcd_txn as t
from ..store.etcd import EtcdStore

log = logging.getLogger(__name__)

RECORD_EVERY = 30.0  # seconds between refreshes of the persistent record's heartbeat
MAX_OPS = 100  # etcd refuses transactions of more than 128 operations by default


@dataclass
class NodeInfo:
    """One node as the cluster sees it."""

    name: str
    address: str
    state: str  # "ready" (its lease is alive) or "down"
    registered: float = 0.0
    heartbeat: float = 0.0  # wall clock of the latest heartbeat on record
    endpoints: int = 0
    blocks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "name": self.name,
            "address": self.address,
            "state": self.state,
            "registered": self.registered,
            "last_heartbeat": self.heartbeat,
            "endpoints": self.endpoints,
            "blocks": self.blocks,
        }


def _doc(entry: t.Entry) -> dict[str, Any]:
    try:
        value = json.loads(entry.value)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class NodeRegistry:
    """This node's membership: register, keep the lease alive, list and remove nodes."""

    def __init__(self, etcd: EtcdStore, name: str, address: str, ttl: float) -> None:
        self.etcd = etcd
        self.name = name
        self.address = address
        self.ttl = max(1, round(ttl))
        self.lease_id = 0
        # When this node last had to re-join because its lease expired: etcd was away longer
        # than the TTL, so every node's lease expired alike (the sync waits for them, below).
        self.rejoined_at = -1e9
        self._recorded = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- this node --------------------------------------------------------------------------

    def register(self) -> None:
        """Write this node's record and take a fresh liveness lease (StoreError if etcd is down)."""
        grant = self.etcd.call(
            f"granting node {self.name}'s lease",
            lambda c: c.post(c.get_url("/lease/grant"), json={"TTL": self.ttl, "ID": 0}),
        )
        lease = int(grant["ID"])
        now = time.time()
        _, (old,) = self.etcd.read("reading node records", t.get(self._node_key()))
        registered = _doc(old[0]).get("registered", now) if old else now
        record = {"name": self.name, "address": self.address, "registered": registered}
        record["heartbeat"] = now
        alive = {"address": self.address, "since": now}
        self.etcd.commit(
            f"registering node {self.name}",
            [],
            [
                t.put(self._node_key(), json.dumps(record, sort_keys=True)),
                t.put(self._alive_key(), json.dumps(alive, sort_keys=True), lease),
            ],
        )
        self.lease_id = lease
        self._recorded = now
        log.info("node %s (%s) registered, lease %x, ttl %d s", self.name, self.address, lease,
                 self.ttl)  # fmt: skip

    def beat(self) -> None:
        """Keep the lease alive; re-register when it expired (after a partition or a pause)."""
        if not self.lease_id:
            self.register()
            return
        answer = self.etcd.call(
            f"keeping node {self.name}'s lease alive",
            lambda c: c.post(c.get_url("/lease/keepalive"), json={"ID": self.lease_id}),
        )
        ttl = int(answer.get("result", {}).get("TTL", -1))
        if ttl <= 0:
            log.warning("node %s: its lease had expired (seen down by the others); re-joining",
                        self.name)  # fmt: skip
            self.register()
            self.rejoined_at = time.monotonic()
            return
        now = time.time()
        if now - self._recorded >= min(RECORD_EVERY, 3 * self.ttl):
            record = {"name": self.name, "address": self.address, "heartbeat": now}
            _, (old,) = self.etcd.read("reading node records", t.get(self._node_key()))
            record["registered"] = _doc(old[0]).get("registered", now) if old else now
            self.etcd.commit(
                f"recording node {self.name}'s heartbeat",
                [],
                [t.put(self._node_key(), json.dumps(record, sort_keys=True))],
            )
            self._recorded = now

    def start(self) -> None:
        """Heartbeat in a thread every third of the TTL until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="netd-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.ttl / 3):
            try:
                self.beat()
                if failing:
                    log.info("node %s: etcd reachable again", self.name)
                failing = False
            except StoreError as e:
                if not failing:
                    log.warning("node %s: heartbeat failed: %s", self.name, e)
                failing = True
            except Exception:
                log.exception("node %s: heartbeat failed", self.name)

    def stop(self) -> None:
        """Stop heartbeating. The lease is left to expire: a daemon restart shorter than the
        TTL is invisible to the other nodes (containers keep running meanwhile)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _revoke(self, name: str, alive: list[t.Entry]) -> None:
        """Revoke a removed node's liveness lease. Deleting its ``alive`` key alone would leave
        a node that is in fact running (``rm --force``) keeping a lease with no key: its
        keepalives would still succeed, so it would never re-register and stay invisible to
        the others for good. With the lease gone, its next heartbeat sees TTL 0 and it joins
        again (as a kubelet re-creates a deleted Node)."""
        lease = alive[0].lease if alive else 0
        if not lease:
            return
        try:
            self.etcd.call(
                f"revoking node {name}'s lease",
                lambda c: c.post(c.get_url("/lease/revoke"), json={"ID": lease}),
            )
        except StoreError as e:  # the lease expires by itself within node_ttl if the node died
            log.warning("node %s removed, but revoking its lease failed: %s", name, e)

    def _node_key(self, name: str | None = None) -> str:
        return self.etcd.key(f"nodes/{name or self.name}")

    def _alive_key(self, name: str | None = None) -> str:
        return self.etcd.key(f"alive/{name or self.name}")

    # --- every node -------------------------------------------------------------------------

    def list(self) -> list[NodeInfo]:
        """Every node on record, with its state, endpoints and address blocks, by name."""
        _, (nodes, alive, endpoints, blocks) = self.etcd.read(
            "listing nodes",
            t.get_under(self.etcd.key("nodes/")),
            t.get_under(self.etcd.key("alive/")),
            t.get_under(self.etcd.key("endpoints/")),
            t.get_under(self.etcd.key("blocks/")),
        )
        live = {e.key.rsplit("/", 1)[-1]: _doc(e) for e in alive}
        out: dict[str, NodeInfo] = {}
        for e in nodes:
            doc = _doc(e)
            name = e.key.rsplit("/", 1)[-1]
            out[name] = NodeInfo(
                name=name,
                address=str(doc.get("address", "")),
                state="ready" if name in live else "down",
                registered=float(doc.get("registered", 0.0)),
                heartbeat=float(doc.get("heartbeat", 0.0)),
            )
        for e in endpoints:
            node = str(_doc(e).get("node", ""))
            if node in out:
                out[node].endpoints += 1
        for e in blocks:
            if e.value in out:
                out[e.value].blocks.append(e.key.split("/blocks/", 1)[-1].split("/", 1)[-1])
        return [out[k] for k in sorted(out)]

    def remove(self, name: str, *, force: bool = False, keep_record: bool = False) -> NodeInfo:
        """Forget node ``name``: its endpoints, their addresses, its blocks and its record.

        Refused (Conflict) while the node is ready unless ``force``: removing a live node
        would hand its containers' addresses to others. NotFound if no such node.
        """
        found = {n.name: n for n in self.list()}
        node = found.get(name)
        if node is None:
            raise NotFound(f"removing node {name!r}: no such node", field="name", value=name)
        if node.state == "ready" and not force:
            raise Conflict(
                f"removing node {name!r}: it is ready (its heartbeat is alive); stop it first "
                "or use --force",
                field="name",
                value=name,
            )
        _, (endpoints, blocks, alive) = self.etcd.read(
            f"reading node {name}'s records",
            t.get_under(self.etcd.key("endpoints/")),
            t.get_under(self.etcd.key("blocks/")),
            t.get(self._alive_key(name)),
        )
        ops: list[list[dict[str, Any]]] = []
        for e in endpoints:
            try:
                ep = endpoint_from_json(json.loads(e.value))
            except (ValueError, KeyError, TypeError):
                continue
            if ep.node != name:
                continue
            group = [t.delete(e.key)]
            group += [
                t.delete(self.etcd.key(f"allocations/{ep.network_id}/{a.ip}")) for a in ep.addresses
            ]
            ops.append(group)
        ops += [[t.delete(e.key)] for e in blocks if e.value == name]
        if not keep_record:
            ops.append([t.delete(self._node_key(name)), t.delete(self._alive_key(name))])
        batch: list[dict[str, Any]] = []
        for group in ops:  # an endpoint and its addresses always go in the same transaction
            if len(batch) + len(group) > MAX_OPS:
                self.etcd.commit(f"removing node {name}", [], batch)
                batch = []
            batch += group
        if batch:
            self.etcd.commit(f"removing node {name}", [], batch)
        if not keep_record:
            self._revoke(name, alive)
        log.info("node %s removed (%d endpoints, %d blocks freed)", name, node.endpoints,
                 len(node.blocks))  # fmt: skip
        return node
