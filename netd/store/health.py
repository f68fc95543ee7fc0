"""Whether the state store can write: the outcome of its latest write, kept for status reports.

Every write transaction of a store reports its outcome here: a write refused because the disk is
full, failing (EIO) or read-only marks the store unhealthy with the engine's message; the next
write that commits marks it healthy again. A refusal that is the store doing its job (Conflict,
NotFound, InvalidInput) says nothing about the disk and counts as a success. ``/v1/status``, CNI
STATUS and ``netd status`` read it (after a fresh probe, see ``Store.probe``), so a daemon that
cannot record anything no longer claims to be ready.

It does not decide what to do about a failing store: the service refuses the operation that
failed and leaves the kernel as the record describes it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class HealthReport:
    """One reading: ``ok``, and when not, why (the engine's message) and since when (epoch s)."""

    ok: bool
    reason: str = ""
    since: float = 0.0


class StoreHealth:
    """The outcome of the latest write, thread-safe (writes run in worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report = HealthReport(ok=True)

    def succeeded(self) -> None:
        """A write committed: the store can write."""
        with self._lock:
            if not self._report.ok:
                self._report = HealthReport(ok=True)

    def failed(self, reason: str) -> None:
        """A write failed for a reason of the store's own (disk full, I/O error, read-only)."""
        with self._lock:
            since = self._report.since if not self._report.ok else time.time()
            self._report = HealthReport(ok=False, reason=reason, since=since)

    def report(self) -> HealthReport:
        """The current reading."""
        with self._lock:
            return self._report


class Prober:
    """Run a store's probe off the event loop; callers arriving while one runs share it.

    A status request probes afresh (a disk can fill between two writes), but a burst of status
    requests costs one write, not one each.
    """

    def __init__(self, probe: Callable[[], HealthReport]) -> None:
        self._probe = probe
        self._running: asyncio.Future[HealthReport] | None = None

    async def __call__(self) -> HealthReport:
        """The store's health, probed now (or by the probe already running)."""
        if self._running is None:
            running = asyncio.ensure_future(asyncio.to_thread(self._probe))
            self._running = running
            running.add_done_callback(lambda _: setattr(self, "_running", None))
        return await asyncio.shield(self._running)
