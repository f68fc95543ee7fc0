"""Fair shares of the DNS worker's scarce resources, per client and per network (pure logic).

One container must not be able to starve the others: neither of forwarded queries in flight
(each holds an upstream socket and a slot until its answer or the 1.8 s deadline) nor of TCP
connections. :class:`FairShare` admits a request when its client, its network ("group") and
the whole worker are under their shares:

- a client's share is ``min(per_client, max(min_share, total // active_clients))``, counting
  the asking client as active; a network's the same with ``per_group`` and active networks.
  So a lone flooder is held at ``per_client``, and as more clients become busy each share
  shrinks towards an equal split of ``total``. Shares are checked on admission only: a client
  above its (shrunken) share keeps what it holds and gets nothing more until it drops below.
- a client holding fewer than ``min_share`` is admitted even when its network is at its
  share: the network cap holds back the heavy clients, never a quiet neighbour.
- ``hard`` bounds the sum (descriptors). It is above ``total``, so a client that was idle still
  finds room while the busy ones' shares shrink.

:class:`TokenBucket` limits how often something happens (SERVFAIL answers to a client over its
share, log lines from a worker). Both are thread-safe: the UDP threads admit, the event loop
releases. No sockets and no DNS here (:mod:`netd.dns.server` uses these).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Shares:
    """The limits of one :class:`FairShare` (see the module docstring for how they combine)."""

    total: int  # the sum the shares are computed from
    hard: int  # absolute ceiling of the sum
    per_client: int
    per_group: int
    min_share: int  # every client may hold this many (while ``hard`` allows)

    def __post_init__(self) -> None:
        if not 1 <= self.min_share <= self.per_client <= self.per_group <= self.total:
            raise ValueError(f"shares must satisfy 1 <= min <= client <= group <= total: {self}")
        if self.hard < self.total:
            raise ValueError(f"hard limit {self.hard} is below the total {self.total}")


# Forwarded queries in flight. 256 per container is ~2,500 uncached names/s at a 100 ms
# upstream, far above what a container's resolver normally asks; a flooder gets that, not all.
FORWARDS = Shares(total=2048, hard=2560, per_client=256, per_group=1024, min_share=16)
# TCP connections (each may sit idle 10 s). Unknown source addresses share one client key.
TCP = Shares(total=512, hard=768, per_client=16, per_group=256, min_share=2)


class FairShare:
    """Counts of what each client and group holds; :meth:`admit` and :meth:`release`."""

    def __init__(self, shares: Shares) -> None:
        self.shares = shares
        self._lock = threading.Lock()
        self._clients: dict[str, int] = {}  # only clients holding something
        self._groups: dict[str, int] = {}
        self.held = 0
        self.refused = 0

    def share(self, client: str, group: str) -> tuple[int, int]:
        """(client share, group share) for a new request of ``client`` in ``group`` now."""
        s = self.shares
        clients = len(self._clients) + (client not in self._clients)
        groups = len(self._groups) + (group not in self._groups)
        return (
            min(s.per_client, max(s.min_share, s.total // clients)),
            min(s.per_group, max(s.min_share, s.total // groups)),
        )

    def admit(self, client: str, group: str) -> bool:
        """Take one slot for ``client`` in ``group`` if both are under their shares."""
        with self._lock:
            mine = self._clients.get(client, 0)
            ours = self._groups.get(group, 0)
            if self.held >= self.shares.hard:
                self.refused += 1
                return False
            # Below the minimum a client is admitted whatever its network holds: a quiet
            # container is never refused because its neighbours on the same network flood.
            if mine >= self.shares.min_share:
                cshare, gshare = self.share(client, group)
                if mine >= cshare or ours >= gshare:
                    self.refused += 1
                    return False
            self._clients[client] = mine + 1
            self._groups[group] = ours + 1
            self.held += 1
            return True

    def release(self, client: str, group: str) -> None:
        """Give back one slot taken by :meth:`admit` (with the same keys)."""
        with self._lock:
            self.held -= 1
            for counts, key in ((self._clients, client), (self._groups, group)):
                n = counts[key] - 1
                if n:
                    counts[key] = n
                else:
                    del counts[key]

    def holding(self, client: str) -> int:
        """How many slots ``client`` holds."""
        return self._clients.get(client, 0)

    def snapshot(self) -> dict[str, int]:
        """Figures for the worker's ``stats``: held, refused, busy clients and groups."""
        with self._lock:
            return {
                "held": self.held,
                "refused": self.refused,
                "clients": len(self._clients),
                "groups": len(self._groups),
            }


class TokenBucket:
    """At most ``rate`` events per second per key, with bursts of up to ``burst``.

    Keys are forgotten once their bucket is full again, so memory follows the keys that are
    currently busy (and is capped at ``max_keys``: beyond it, new keys are refused).
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self.denied = 0

    def allow(self, key: str, now: float) -> bool:
        """Take one token for ``key`` at time ``now`` (monotonic seconds); False if none left."""
        with self._lock:
            got = self._buckets.get(key)
            if got is None:
                if len(self._buckets) >= self.max_keys:
                    self._expire(now)
                    if len(self._buckets) >= self.max_keys:
                        self.denied += 1
                        return False
                tokens = self.burst
            else:
                tokens = min(self.burst, got[0] + (now - got[1]) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                self.denied += 1
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True

    def _expire(self, now: float) -> None:
        rate, burst = self.rate, self.burst
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * rate >= burst]
        for key in full:
            del self._buckets[key]
