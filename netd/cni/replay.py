"""Replaying the DEL spool: the DELs the CNI plugin recorded while the daemon was down.

The daemon replays the spool (:mod:`netd.cni.spool`) once at start-up, after the service has
loaded its state and before the API socket serves, and then every few seconds, for a DEL whose
plugin found the socket missing a moment before the daemon bound it. Each record goes through
the same CNI handler and ``Service.detach`` as a live DEL, so a replay is idempotent: an unknown
network or attachment is success. The record is then deleted.

One guard a live DEL does not need: a record older than the attachment it names is stale, for
the container was attached again (``podman restart`` keeps the container id) after the DEL was
written; it is dropped without touching the new attachment. So is a record whose namespace
inode differs from the one the attachment was plumbed in.

A record that cannot be used (unreadable, not a DEL, refused by the handler) is logged and moved
to ``rejected/`` in the spool, never retried and never fatal. A spool directory that is not
root's own with mode 0700 is not read at all: its records could have been planted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NotFound
from . import spool
from .backend import BackendProxy
from .handler import handle_cni
from .spec import TRY_AGAIN_LATER

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger("netd.cni.replay")
INTERVAL = 2.0  # seconds between looks at the spool while serving (one directory listing)
STALE_TEMP = 60.0  # a temporary file this old was left by a plugin that died mid-write


class _ReplayBackend(BackendProxy):
    """The service as the handler sees it for one spooled DEL (only ``detach`` differs)."""

    def __init__(self, service: Service, spooled_at: float, netns_inode: int) -> None:
        super().__init__(service)
        self._svc = service
        self._spooled_at = spooled_at
        self._netns_inode = netns_inode
        self.skipped = ""

    async def detach(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        """``Service.detach``, unless the attachment is newer than the DEL."""
        try:
            net = self._svc.find_network(network)
        except NotFound:
            return
        ep = next(
            (e for e in self._svc.find_endpoints(net, container_id) if e.ifname == ifname), None
        )
        if ep is not None and ep.created > self._spooled_at:
            self.skipped = f"the attachment was made again at {time.ctime(ep.created)}"
            return
        if ep is not None and self._netns_inode and ep.netns_inode not in (0, self._netns_inode):
            self.skipped = (
                f"it named namespace net:[{self._netns_inode}], the attachment is in "
                f"net:[{ep.netns_inode}]"
            )
            return
        await self._svc.detach(network, container_id, ifname, netns)


def _reject(directory: Path, name: str, why: str) -> None:
    log.error("spooled DEL %s: %s; moved to %s", directory / name, why, directory / spool.REJECTED)
    try:
        (directory / spool.REJECTED).mkdir(mode=0o700, exist_ok=True)
        os.replace(directory / name, directory / spool.REJECTED / name)
    except OSError as exc:
        log.error("moving %s aside failed (%s); deleting it", directory / name, exc)
        with contextlib.suppress(OSError):
            (directory / name).unlink()


def _entries(directory: Path) -> list[str]:
    """Record names in time order (the spool checked first); [] when there is no spool."""
    try:
        st = directory.lstat()
    except FileNotFoundError:
        return []
    try:
        spool.check_dir(str(directory), st)
    except PermissionError as exc:
        log.error("not replaying the DEL spool %s: %s", directory, exc.strerror)
        return []
    names = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                # A plugin's temporary file: in flight, or left by one that died mid-write.
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP:
                        os.unlink(entry.path)
            elif entry.name != spool.REJECTED:
                names.append(entry.name)
    return sorted(names)


async def replay(service: Service, directory: Path) -> int:
    """Replay every record in ``directory``; the number of DELs applied (skips not counted)."""
    done = 0
    for name in await asyncio.to_thread(_entries, directory):
        path = directory / name
        try:
            doc = await asyncio.to_thread(spool.read, str(path))
        except FileNotFoundError:
            continue  # replayed by a pass that overlapped this one
        except (OSError, ValueError) as exc:
            _reject(directory, name, f"unusable record: {exc}")
            continue
        call = doc["call"]
        what = f"{call.get('containerId')}/{call.get('ifname')}"
        backend = _ReplayBackend(service, float(doc["spooled_at"]), int(doc["netns_inode"]))
        status, result = await handle_cni(call, backend)
        if status != 0 and result.get("code") == TRY_AGAIN_LATER:
            log.info("spooled DEL of %s: %s; retrying on the next pass", what, result.get("msg"))
            continue
        if status != 0:
            _reject(directory, name, f"refused: {result.get('msg')}")
            continue
        if backend.skipped:
            log.warning("spooled DEL of %s (%s) dropped: %s", what, path, backend.skipped)
        else:
            log.info("replayed spooled DEL of %s (written %s)", what, time.ctime(doc["spooled_at"]))
            done += 1
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return done


async def run(service: Service, directory: Path, interval: float = INTERVAL) -> None:
    """Replay the spool every ``interval`` seconds until cancelled; a failed pass is logged."""
    while True:
        await asyncio.sleep(interval)
        try:
            await replay(service, directory)
        except Exception:
            log.exception("replaying the DEL spool %s failed", directory)
