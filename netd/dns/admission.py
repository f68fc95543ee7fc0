"""Who gets a forwarded-query slot or a TCP connection: the worker's per-client limits.

The server (:mod:`netd.dns.server`) asks :class:`Admission` before it hands a query to the
forwarder and when it accepts a TCP connection. Clients are containers (all addresses of one
container are one client, :attr:`~netd.dns.records.Client.cid`); source addresses that are no
container share one client key (they only ever get REFUSED, but must not hold every TCP
connection); the host listener's askers are keyed by address. A request's group is the
network whose gateway it was sent to. The shares are :mod:`netd.dns.limits`'.

Over its share a UDP query is answered SERVFAIL at once (not dropped: the client learns
immediately, and glibc moves on to its next nameserver), as BIND does when its
``recursive-clients``/``fetches-per-zone`` quotas are hit. That answer is never longer than the
query (header and question, plus an OPT only if the query had one), so it amplifies nothing;
it is still limited to :data:`SERVFAIL_RATE` per client and second (beyond: dropped, counted),
so a flood of spoofed sources cannot make the worker busy sending them. One warning per client
every :data:`WARN_EVERY` seconds goes to the log.
"""

from __future__ import annotations

import logging
import time

from .limits import FORWARDS, TCP, FairShare, Shares, TokenBucket
from .records import Tables

log = logging.getLogger("netd.dns.worker")

SERVFAIL_RATE = 5000.0  # over-share answers per client and second (bursts of as many)
WARN_EVERY = 60.0  # seconds between two warnings about the same client
UNKNOWN = "?"  # the client key of source addresses that are no container


class Admission:
    """Forward slots and TCP connections per client and network."""

    def __init__(self, forwards: Shares = FORWARDS, tcp: Shares = TCP) -> None:
        self.forwards = FairShare(forwards)
        self.tcp = FairShare(tcp)
        self.servfails = TokenBucket(SERVFAIL_RATE, SERVFAIL_RATE)
        self._warned: dict[str, float] = {}

    @staticmethod
    def keys(tables: Tables, cid: str, src: str, listen: str, host: bool) -> tuple[str, str]:
        """(client key, group key) for a request from ``src`` to ``listen``."""
        if host:
            return f"host:{src}", "host"
        return cid or UNKNOWN, tables.network_of(listen)

    def admit_forward(self, keys: tuple[str, str], src: str) -> bool:
        """Whether a query may go upstream now (one slot taken); if not, see :meth:`refusal`."""
        if self.forwards.admit(*keys):
            return True
        self._warn(keys, src, "forwarded queries in flight", self.forwards)
        return False

    def refusal(self, keys: tuple[str, str], now: float) -> bool:
        """Whether a client over its share gets its SERVFAIL (False: over the answer rate)."""
        return self.servfails.allow(keys[0], now)

    def admit_tcp(self, keys: tuple[str, str], src: str) -> bool:
        """Whether a new TCP connection may stay open (else close it at once)."""
        if self.tcp.admit(*keys):
            return True
        self._warn(keys, src, "TCP connections", self.tcp)
        return False

    def _warn(self, keys: tuple[str, str], src: str, what: str, fair: FairShare) -> None:
        now = time.monotonic()
        client = keys[0]
        last = self._warned.get(client)
        if last is not None and now - last < WARN_EVERY:
            return
        if len(self._warned) >= 4096:
            self._warned.clear()
        self._warned[client] = now
        share, group_share = fair.share(*keys)
        log.warning(
            "DNS client %s (container %s, network %s) is over its share of %s "
            "(holds %d, share %d, network share %d); refusing more for now",
            src, client, keys[1], what, fair.holding(client), share, group_share,
        )  # fmt: skip

    def snapshot(self) -> dict[str, object]:
        """Figures for the worker's ``stats`` reply."""
        return {
            "forwards": self.forwards.snapshot(),
            "tcp": self.tcp.snapshot(),
            "servfail_dropped": self.servfails.denied,
        }
