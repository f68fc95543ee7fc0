"""What wakes the cluster sync (pure: the watch callback with a fake loop).

Only changes to what a node serves wake it: other nodes' ready endpoints (appearing, changing,
going), networks, blocks. An attach elsewhere writes its record once, already "ready"; an
endpoint that is only "creating" (a writer that records both states) and this node's own
records are queued for the view without a pass of their own.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from types import SimpleNamespace
from typing import Any

from netd.cluster.sync import ClusterSync, _served

PREFIX = "/netd/"


class FakeLoop:
    def __init__(self) -> None:
        self.woken = 0

    def is_closed(self) -> bool:
        return False

    def call_soon_threadsafe(self, fn: Any) -> None:
        self.woken += 1


def make_sync() -> tuple[ClusterSync, FakeLoop]:
    sync = object.__new__(ClusterSync)
    sync.etcd = SimpleNamespace(prefix=PREFIX)  # type: ignore[assignment]
    sync.node = "h1"
    sync._mine = '"node":"h1"'
    sync._events = deque()
    sync._wake = asyncio.Event()
    loop = FakeLoop()
    sync._loop = loop  # type: ignore[assignment]
    return sync, loop


def doc(node: str, state: str | None) -> str:
    record: dict[str, Any] = {"container_id": "c1", "node": node}
    if state is not None:
        record["state"] = state
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def event(rest: str, value: str = "", before: str = "", kind: str = "PUT") -> dict[str, Any]:
    out: dict[str, Any] = {"kv": {"key": PREFIX + rest, "value": value, "mod_revision": 7}}
    if before:
        out["prev_kv"] = {"value": before}
    if kind == "DELETE":
        out["type"] = "DELETE"
    return out


EP = "endpoints/net1/c1/eth0"


def wakes(e: dict[str, Any]) -> bool:
    sync, loop = make_sync()
    sync._on_event(e)
    assert len(sync._events) == 1  # queued for the view either way
    return loop.woken == 1


def test_other_nodes_ready_endpoints_wake_creating_ones_do_not() -> None:
    assert wakes(event(EP, doc("h2", "ready")))
    assert not wakes(event(EP, doc("h2", "creating")))
    assert wakes(event(EP, doc("h2", "ready"), doc("h2", "creating")))  # became ready
    assert wakes(event(EP, doc("h2", "deleting"), doc("h2", "ready")))  # no longer served
    assert wakes(event(EP, "", doc("h2", "ready"), kind="DELETE"))
    assert not wakes(event(EP, "", doc("h2", "creating"), kind="DELETE"))


def test_own_records_never_wake() -> None:
    assert not wakes(event(EP, doc("h1", "ready")))
    assert not wakes(event(EP, "", doc("h1", "ready"), kind="DELETE"))


def test_a_record_without_a_state_is_served() -> None:
    assert _served(doc("h2", None)) and not _served("")
    assert wakes(event(EP, doc("h2", None)))


def test_networks_and_blocks_wake_quiet_keys_are_not_even_queued() -> None:
    assert wakes(event("networks/net1", '{"id":"net1"}'))
    assert wakes(event("blocks/net1/10.60.0.0-26", "h2"))
    sync, loop = make_sync()
    sync._on_event(event("cursors/net1/10.60.0.0-16", "10.60.0.9"))
    sync._on_event(event("allocations/net1/10.60.0.9", "c1/eth0"))
    assert not sync._events and loop.woken == 0
