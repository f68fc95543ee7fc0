"""The one undo mechanism: a stack of compensating steps, run newest first on failure.

Every multi-step change (create a network; plumb, firewall and record an endpoint) pushes how
to undo each step as it succeeds, and runs the stack in reverse when a later step fails (STYLE.md,
after netavark's setup.rs). Steps are blocking calls (netlink, libnftables, SQLite) that return
their failures as a list, as driver and firewall teardowns do; run the stack in the thread that
did the work, or hand it to a worker thread from async code with :meth:`Undo.arun`.

:func:`finish_in_thread` is the other half of the story for async callers: a worker thread
cannot be interrupted, so a cancelled request waits for it and then undoes what it did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("netd.service")
T = TypeVar("T")


class Undo:
    """Compensating steps, run in reverse on failure (best effort, all of them, logged)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []

    def push(self, what: str, step: Callable[..., Any], *args: Any) -> None:
        """Remember that ``step(*args)`` undoes ``what``."""
        self._steps.append((what, step, args))

    def run(self) -> None:
        """Undo everything pushed so far, newest first; log and carry on past failures."""
        while self._steps:
            what, step, args = self._steps.pop()
            undo_step(what, step, *args)

    async def arun(self) -> None:
        """:meth:`run` in a worker thread (the steps block)."""
        await asyncio.to_thread(self.run)


def undo_step(what: str, step: Callable[..., Any], *args: Any) -> None:
    """Run one compensating step in this thread; log, never raise, past its failure."""
    try:
        failures = step(*args)
    except Exception:
        log.exception("rollback: undoing %s failed", what)
        return
    for failure in failures or ():
        log.error("rollback: undoing %s: %s", what, failure)


async def finish_in_thread(fn: Callable[..., T], undo: Callable[[T], Any], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; a cancelled caller still waits for it, then undoes it.

    A thread cannot be interrupted: returning at once would let the caller's rollback run while
    the thread is still creating what it is rolling back, and leave behind what it created.
    """
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        if not work.cancelled() and work.exception() is None:
            await asyncio.to_thread(undo, work.result())
        raise
