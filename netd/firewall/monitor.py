"""Self-repair: notice when someone deletes or flushes netd's rules, and put them back.

A :class:`FirewallMonitor` thread listens to nftables change events (a NETLINK_NETFILTER
socket subscribed to the NFNLGRP_NFTABLES group, opened in the namespace the daemon runs in)
and, as a backstop for changes that send no event (iptables-legacy, a missed event), runs
``check`` every ``interval`` seconds anyway. When ``check`` returns False it calls ``repair``.
Events are only a hint to check soon: the monitor never parses them, so netd's own changes
merely cause a cheap check.

The monitor knows nothing about rules; the backend's ``check``/``repair`` do.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable

from ..errors import NetdError

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12  # linux/netlink.h
NFNLGRP_NFTABLES = 7  # linux/netfilter/nfnetlink.h
SOL_NETLINK = 270  # linux/socket.h
NETLINK_ADD_MEMBERSHIP = 1  # linux/netlink.h
DEBOUNCE = 0.05  # seconds: let a burst of events (one batch) settle before checking


def open_nftables_events() -> socket.socket | None:
    """A netlink socket receiving nftables change events, or None (logged) if unavailable."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        sock.setblocking(False)
    except OSError as exc:
        log.warning("nftables events unavailable (%s): relying on the periodic check", exc)
        return None
    return sock


class FirewallMonitor:
    """Calls ``repair()`` whenever ``check()`` says netd's rules are not as they should be."""

    def __init__(
        self,
        check: Callable[[], bool],
        repair: Callable[[], None],
        interval: float = 2.0,
        events: bool = True,
    ) -> None:
        self._check = check
        self._repair = repair
        self._interval = interval
        self._events = events
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.repairs = 0  # how many times a repair ran (for `netd status` and tests)

    def start(self) -> None:
        """Open the event socket (in the caller's namespace) and start the thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._sock = open_nftables_events() if self._events else None
        self._thread = threading.Thread(target=self._loop, name="netd-fw-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the socket; waits for a running repair to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _drain(self) -> bool:
        got = False
        assert self._sock is not None
        while True:
            try:
                self._sock.recv(65536)
                got = True
            except BlockingIOError:
                return got
            except OSError as exc:  # ENOBUFS: events were lost; a check covers them
                log.debug("nftables event socket: %s", exc)
                return True

    def _wait(self, timeout: float) -> bool:
        """Sleep until an event arrives or ``timeout`` passes; True if events arrived."""
        if self._sock is None:
            self._stop.wait(timeout)
            return False
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Wake at least every 0.2 s so stop() is prompt.
            ready, _, _ = select.select([self._sock], [], [], min(left, 0.2))
            if ready and self._drain():
                self._stop.wait(DEBOUNCE)
                self._drain()
                return True
        return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            evented = self._wait(self._interval)
            if self._stop.is_set():
                return
            try:
                if not self._check():
                    log.warning(
                        "netd's firewall rules changed behind its back (%s); repairing",
                        "event" if evented else "periodic check",
                    )
                    self._repair()
                    self.repairs += 1
            except NetdError as exc:  # a tool failed (or was signalled with us): said plainly
                if not self._stop.is_set():
                    log.error("firewall check/repair failed: %s", exc)
            except Exception:  # the monitor must outlive a failed repair; next round retries
                log.exception("firewall check/repair failed")
