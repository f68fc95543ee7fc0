"""The cluster as one node sees it: what is read from etcd, followed by watch events, saved.

:class:`ClusterView` is everything a node needs from etcd at one revision: the global networks,
every endpoint on them (with the node that runs it), the live nodes and the IPAM blocks.
:func:`read_view` reads it whole in one read transaction; :func:`apply_event` follows one watch
event; :func:`save_view`/:func:`load_view` keep the last one on disk for a start while etcd
does not answer. Used by :mod:`netd.cluster.sync`; nothing here touches the kernel.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..model import Endpoint, Network, endpoint_from_json, network_from_json, to_json
from ..store import etcd_txn as t
from ..store.etcd import EtcdStore

log = logging.getLogger(__name__)


@dataclass
class ClusterView:
    """Everything a node needs from etcd, read at one revision."""

    revision: int = 0
    complete: bool = True  # read whole at ``revision`` (False: followed from watch events)
    networks: dict[str, Network] = field(default_factory=dict)
    endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)  # network id → all
    alive: dict[str, str] = field(default_factory=dict)  # node name → underlay address
    blocks: dict[str, dict[str, str]] = field(default_factory=dict)  # net → block → node


def read_view(etcd: EtcdStore) -> ClusterView:
    """One read transaction of the cluster's networks, endpoints, live nodes and blocks."""
    revision, (nets, eps, alive, blocks) = etcd.read(
        "reading the cluster view",
        t.get_under(etcd.key("networks/")),
        t.get_under(etcd.key("endpoints/")),
        t.get_under(etcd.key("alive/")),
        t.get_under(etcd.key("blocks/")),
    )
    view = ClusterView(revision=revision)
    for entry in nets:
        net = etcd.load_network(entry)
        view.networks[net.id] = net
    for entry in sorted(eps, key=lambda e: e.create_revision):
        ep = etcd.load_endpoint(entry)
        view.endpoints.setdefault(ep.network_id, []).append(ep)
    for entry in alive:
        try:
            address = str(json.loads(entry.value).get("address", ""))
        except (ValueError, AttributeError):
            continue
        view.alive[entry.key.rsplit("/", 1)[-1]] = address
    blocks_root = etcd.key("blocks/")
    for entry in blocks:
        net_id, _, block = entry.key[len(blocks_root) :].partition("/")
        view.blocks.setdefault(net_id, {})[block] = entry.value
    return view


def text_of(raw: object) -> str:
    """A key or value of a watch event as text."""
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


@functools.lru_cache(maxsize=1024)
def vtep_of(address: str) -> ipaddress.IPv4Address | None:
    """A node's underlay address as recorded (None if it is not IPv4: skipped, logged).

    Cached: every pass asks it once per remote address, of a handful of node addresses."""
    try:
        return ipaddress.IPv4Address(address)
    except ValueError:
        log.warning("a node's recorded underlay address %r is not IPv4: not programmed", address)
        return None


def apply_event(etcd: EtcdStore, view: ClusterView, rest: str, value: str | None) -> None:
    """Apply one watch event (key below the prefix; value None for a delete) to ``view``."""
    kind, _, name = rest.partition("/")
    if kind == "networks":
        if value is None:
            view.networks.pop(name, None)
            view.endpoints.pop(name, None)
            view.blocks.pop(name, None)
        else:
            net = etcd.load_network(t.Entry(etcd.key(rest), value, 0, 0))
            view.networks[net.id] = net
    elif kind == "endpoints":
        net_id, cid, ifname = name.split("/", 2)
        eps = [e for e in view.endpoints.get(net_id, []) if e.key != (cid, ifname)]
        if value is not None:
            eps.append(etcd.load_endpoint(t.Entry(etcd.key(rest), value, 0, 0)))
        view.endpoints[net_id] = eps
    elif kind == "alive":
        if value is None:
            view.alive.pop(name, None)
        else:
            view.alive[name] = str(json.loads(value).get("address", ""))
    elif kind == "blocks":
        net_id, _, block = name.partition("/")
        if value is None:
            view.blocks.get(net_id, {}).pop(block, None)
        else:
            view.blocks.setdefault(net_id, {})[block] = value


def save_view(path: Path, view: ClusterView) -> None:
    """Write ``view`` to ``path`` atomically (temporary file, fsync, rename)."""
    doc = {
        "revision": view.revision,
        "networks": [to_json(n) for n in view.networks.values()],
        "endpoints": [to_json(e) for eps in view.endpoints.values() for e in eps],
        "alive": view.alive,
        "blocks": view.blocks,
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(doc, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        log.warning("saving the cluster view to %s: %s", path, e.strerror)


def load_view(path: Path) -> ClusterView | None:
    """The view saved at ``path``; None if there is none or it cannot be read (logged)."""
    try:
        doc = json.loads(path.read_text())
        view = ClusterView(revision=int(doc["revision"]))
        for d in doc["networks"]:
            net = network_from_json(d)
            view.networks[net.id] = net
        for d in doc["endpoints"]:
            ep = endpoint_from_json(d)
            view.endpoints.setdefault(ep.network_id, []).append(ep)
        view.alive = {str(k): str(v) for k, v in doc["alive"].items()}
        view.blocks = {str(k): dict(v) for k, v in doc["blocks"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("the saved cluster view %s cannot be used: %s", path, e)
        return None
    return view
