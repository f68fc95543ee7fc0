"""Repair from kernel link events: a deleted netd bridge or host veth is put back within a second.

The periodic reconcile pass (every ``reconcile_interval``, 30 s by default) finds anything
missing, but a bridge deleted by hand, or by a network manager that removes bridges it does not
know, would cut containers off until then. The :class:`LinkWatcher` listens to rtnetlink link
events (a ``NETLINK_ROUTE`` socket subscribed to ``RTNLGRP_LINK``, opened in the namespace the
daemon manages, read by the event loop itself: no thread) and, when a link carrying one of
netd's ifalias tags is deleted, runs a reconcile pass limited to the networks concerned — as
the firewall monitor already does for ``nft flush ruleset``.

Events are only a hint: after a short debounce (a bridge deletion comes with a burst of port
events) the watcher keeps the tags that the records expect to exist (netd's own deletions — a
detach, a DEL, a rolled-back attach — are of endpoints in flight or gone from the records, and
a removed network is gone) and hands their networks to
:meth:`netd.service.Service.reconcile`, which checks the kernel itself and repairs under the
network locks. A lost event (``ENOBUFS``) triggers a full pass. Passes are at least
``MIN_GAP`` apart, so a repair that keeps failing (and deleting what it made) cannot spin.
Parsing is pure (:func:`deleted_links`); the repair logic is the reconciler's, not this
module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .model import Network
from .names import parse_tag
from .reconcile.plan import Expected

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1  # linux/rtnetlink.h: the legacy group bit of RTNLGRP_LINK
RTM_DELLINK = 17  # linux/rtnetlink.h
IFLA_IFNAME, IFLA_IFALIAS = 3, 20  # linux/if_link.h
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (linux/netlink.h)
_IFINFOMSG_SIZE = 16  # struct ifinfomsg
_NLA = struct.Struct("=HH")  # len, type
DEBOUNCE = 0.1  # seconds: let the burst of one deletion arrive before acting
MIN_GAP = 0.5  # seconds between passes: a repair that keeps failing must not spin


@dataclass(frozen=True)
class DeletedLink:
    """An ``RTM_DELLINK`` event: the link's name and ifalias ("" when it had none)."""

    ifname: str
    alias: str


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size:
            break
        out[kind & 0x3FFF] = data[offset + _NLA.size : offset + length]
        offset += (length + 3) & ~3
    return out


def _text(raw: bytes | None) -> str:
    return (raw or b"").split(b"\0", 1)[0].decode("utf-8", "replace")


def deleted_links(data: bytes) -> list[DeletedLink]:
    """Every ``RTM_DELLINK`` in one datagram of netlink messages (others are skipped)."""
    found = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        if kind == RTM_DELLINK:
            attrs = _attrs(data, offset + _NLMSGHDR.size + _IFINFOMSG_SIZE, offset + length)
            found.append(DeletedLink(_text(attrs.get(IFLA_IFNAME)), _text(attrs.get(IFLA_IFALIAS))))
        offset += (length + 3) & ~3
    return found


def networks_to_repair(
    tags: Iterable[str], networks: Iterable[Network], expected: Expected
) -> set[str]:
    """Ids of the networks whose deleted links (by tag) the records still expect."""
    networks = list(networks)
    want = expected.tags
    ids = set()
    for tag in tags:
        if tag not in want or (parsed := parse_tag(tag)) is None:
            continue  # netd removed it itself (detach, network removal), or a stranger's
        # A network's own objects are known by tag (a VLAN parent, shared, names no network);
        # an endpoint's tag carries the start of its network's id.
        if parsed.of_endpoint:
            ids |= {n.id for n in networks if n.id.startswith(parsed.network)}
        else:
            ids |= {n.id for n in networks if tag in expected.networks.get(n.id, ())}
    return ids


def _exists(ifname: str) -> bool:
    """Whether a link named ``ifname`` exists in this namespace now (one ioctl)."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def open_link_events() -> socket.socket | None:
    """A non-blocking rtnetlink socket receiving link events in this namespace, or None."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.bind((0, RTMGRP_LINK))
        sock.setblocking(False)
    except OSError as exc:
        log.warning("link events unavailable (%s): repairs wait for the periodic pass", exc)
        return None
    return sock


Reconcile = Callable[[set[str] | None], Awaitable[object]]
State = Callable[[], tuple[list[Network], Expected]]


class LinkWatcher:
    """Runs ``reconcile(network ids)`` soon after a link the records expect is deleted."""

    def __init__(
        self, reconcile: Reconcile, state: State, debounce: float = DEBOUNCE, gap: float = MIN_GAP
    ) -> None:
        """``state()`` gives the records at the time of deciding: the networks, and the
        endpoints whose links must exist (ready, not being attached or detached)."""
        self._reconcile = reconcile
        self._state = state
        self._debounce = debounce
        self._gap = gap
        self._last = -gap
        self._sock: socket.socket | None = None
        self._tags: dict[str, str] = {}  # tag → name of the deleted link
        self._full = False  # events were lost: check everything
        self._task: asyncio.Task[None] | None = None
        self.passes = 0  # targeted passes run (tests, metrics)

    def start(self) -> LinkWatcher:
        """Subscribe (in the current namespace) and read events on the running loop."""
        self._sock = open_link_events()
        if self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)
        return self

    async def stop(self) -> None:
        """Unsubscribe; waits for a pass in progress."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped events: look at everything
                    log.warning("link events overflowed; reconciling every network")
                    self._full = True
                    continue
                log.error("reading link events: %s", exc)
                break
            for link in deleted_links(data):
                if parse_tag(link.alias) is not None:
                    self._tags[link.alias] = link.ifname
        if (self._tags or self._full) and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        """Debounce, decide, reconcile; again while events arrived during the pass."""
        loop = asyncio.get_running_loop()
        while self._tags or self._full:
            await asyncio.sleep(max(self._debounce, self._last + self._gap - loop.time()))
            deleted, self._tags = self._tags, {}
            # A link that exists again under its name was re-made by netd itself, e.g. a DEL
            # followed at once by an ADD of the same container (a runtime's restart): no pass
            # over the whole network for that.
            tags = {tag for tag, name in deleted.items() if not _exists(name)}
            full, self._full = self._full, False
            networks, expected = self._state()
            ids = None if full else networks_to_repair(tags, networks, expected)
            if ids is not None and not ids:
                continue
            names = "every network" if ids is None else ", ".join(sorted(i[:12] for i in ids))
            log.warning("netd links deleted behind its back (%s); repairing %s", tags, names)
            self._last = loop.time()
            try:
                await self._reconcile(ids)
                self.passes += 1
            except Exception:  # the watcher must outlive a failed pass; the periodic one retries
                log.exception("repair after link events failed")
