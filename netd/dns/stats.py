"""Query counters of the DNS worker: answers by result code, latency buckets, cache hits.

Every serving thread (one per UDP socket, plus the event loop for TCP and forwarded answers)
owns one :class:`Counts` and is its only writer, so the hot path increments plain lists without
locks and no increment is ever lost; :meth:`QueryStats.snapshot` sums them for the daemon, which
exposes them as Prometheus series (``netd_dns_queries_total{result}``,
``netd_dns_query_seconds``, ``netd_dns_cache_hits_total``). Latency is the time from receiving
a query to having its answer, in this process (upstream waits included for forwarded names).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

# Histogram upper bounds in seconds (the last bucket is +Inf).
BOUNDS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# RFC 1035 §4.1.1 / RFC 6895 response codes, by name; the rest count as "other".
RESULTS = {0: "noerror", 1: "formerr", 2: "servfail", 3: "nxdomain", 4: "notimp", 5: "refused"}


class Counts:
    """Counters written by one thread only."""

    __slots__ = ("buckets", "cache_hits", "rcodes", "seconds")

    def __init__(self) -> None:
        self.rcodes = [0] * 16
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.seconds = 0.0
        self.cache_hits = 0

    def record(self, response: bytes, seconds: float) -> None:
        """One answer sent: its result code and how long it took."""
        self.rcodes[response[3] & 0x0F] += 1
        self.buckets[bisect_left(BOUNDS, seconds)] += 1
        self.seconds += seconds


class QueryStats:
    """All threads' counters; a snapshot sums them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[Counts] = []
        self._local = threading.local()

    def mine(self) -> Counts:
        """The calling thread's counters (created on first use)."""
        counts: Counts | None = getattr(self._local, "counts", None)
        if counts is None:
            counts = Counts()
            self._local.counts = counts
            with self._lock:
                self._all.append(counts)
        return counts

    def snapshot(self) -> dict[str, Any]:
        """Totals: ``results`` by name, per-bucket ``buckets``, ``sum``, ``count``, cache hits."""
        with self._lock:
            every = list(self._all)
        rcodes = [sum(c.rcodes[i] for c in every) for i in range(16)]
        results: dict[str, int] = {}
        for code, n in enumerate(rcodes):
            name = RESULTS.get(code, "other")
            results[name] = results.get(name, 0) + n
        buckets = [sum(c.buckets[i] for c in every) for i in range(len(BOUNDS) + 1)]
        return {
            "results": results,
            "bounds": list(BOUNDS),
            "buckets": buckets,
            "sum": sum(c.seconds for c in every),
            "count": sum(buckets),
            "cache_hits": sum(c.cache_hits for c in every),
        }


def sum_query_stats(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' ``stats`` replies summed into one set of query counters."""
    total: dict[str, Any] = {
        "results": {},
        "buckets": [],
        "sum": 0.0,
        "count": 0,
        "cache_hits": 0,
        "upstream_failures": 0,
        "over_share": {"forward": 0, "tcp": 0},
        "bounds": [],
    }
    for reply in replies:
        q = reply.get("queries", {})
        for name, n in q.get("results", {}).items():
            total["results"][name] = total["results"].get(name, 0) + n
        buckets = q.get("buckets", [])
        if not total["buckets"]:
            total["buckets"] = [0] * len(buckets)
            total["bounds"] = q.get("bounds", [])
        total["buckets"] = [a + b for a, b in zip(total["buckets"], buckets, strict=False)]
        total["sum"] += q.get("sum", 0.0)
        total["count"] += q.get("count", 0)
        total["cache_hits"] += q.get("cache_hits", 0)
        total["upstream_failures"] += reply.get("upstream_failures", 0)
        limits = reply.get("limits", {})
        for kind, key in (("forward", "forwards"), ("tcp", "tcp")):
            total["over_share"][kind] += limits.get(key, {}).get("refused", 0)
    return total
