"""The DEL spool: where the CNI plugin records a DEL the daemon could not take, for replay.

STANDARD LIBRARY ONLY (the plugin imports it under ``python3 -I -S``, on the rare path where the
daemon is down). Runtimes do not retry a failed DEL (Podman ignores it, containerd logs it and
moves on) and with the reference plugins DEL needs no daemon; so when netd's socket is absent or
refuses the connection, the plugin writes the call here and answers success. The daemon replays
the spool before it serves (:mod:`netd.cni.replay`).

Layout: a directory named after the socket, ``<socket>.del-spool`` (``/run/netd/netd.sock``
→ ``/run/netd/netd.sock.del-spool/``), so a plugin finds it from the socket path it already
knows and two daemons never share one. Owned by root, mode 0700: only root may spool, because a
spooled DEL is replayed with root's authority and a file carries no peer credentials. One file
per DEL, ``<nanoseconds>-<pid>.json``, written to a dot-named temporary file, fsynced, renamed
into place and the directory fsynced, so a reader sees a whole record or nothing.

This module writes and reads records; it does not decide what a record means (the daemon does).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any

SUFFIX = ".del-spool"
REJECTED = "rejected"  # sub-directory for records the daemon could not use (kept for a human)
MAX_RECORD = 1 << 20  # the daemon's request body limit is 1 MiB too
FORMAT = 1
# Errors that prove nothing was sent and no daemon is listening: spooling is safe. A timeout or
# a broken answer is not among them: the daemon may have the request and act on it.
DAEMON_DOWN = (errno.ENOENT, errno.ECONNREFUSED)


def spool_dir(socket_path: str) -> str:
    """The spool directory of the daemon listening on ``socket_path``."""
    return socket_path.rstrip("/") + SUFFIX


def check_dir(path: str, st: os.stat_result) -> None:
    """PermissionError unless ``st`` (an lstat) is a root-owned directory closed to others."""
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(errno.EPERM, "not a directory", path)
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise PermissionError(
            errno.EPERM,
            f"must be owned by root with mode 0700 (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):04o})",
            path,
        )


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record(call: dict[str, Any], netns_inode: int = 0, now: float | None = None) -> dict[str, Any]:
    """The spool record of one forwarded CNI call (the body ``POST /v1/cni`` takes)."""
    return {
        "format": FORMAT,
        "spooled_at": time.time() if now is None else now,
        "netns_inode": netns_inode,
        "pid": os.getpid(),
        "call": call,
    }


def netns_inode_of(path: str) -> int:
    """The inode of the namespace at ``path`` as the runtime still sees it; 0 if none."""
    if not path:
        return 0
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def write(directory: str, doc: dict[str, Any]) -> str:
    """Durably add ``doc`` to the spool; its final path. OSError (with the path) on failure.

    Only root spools: the directory is created 0700 if missing and refused if anyone else could
    write to it or plant a record there.
    """
    if os.geteuid() != 0:
        raise PermissionError(errno.EPERM, "only root may spool a DEL", directory)
    # The socket's directory too, as the daemon makes it (/run is empty after a reboot, and a
    # DEL may come before the daemon first started).
    os.makedirs(os.path.dirname(directory) or "/", 0o755, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    check_dir(directory, os.lstat(directory))
    data = json.dumps(doc, separators=(",", ":")).encode()
    if len(data) > MAX_RECORD:
        raise OSError(errno.EFBIG, f"record larger than {MAX_RECORD} bytes", directory)
    name = f"{time.time_ns():020d}-{os.getpid()}.json"
    tmp = os.path.join(directory, f".{name}.tmp")
    final = os.path.join(directory, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return final


def read(path: str) -> dict[str, Any]:
    """One record, checked for shape; ValueError saying what is wrong with it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_uid != 0:
            raise ValueError(f"owned by uid {st.st_uid}, not root")
        if st.st_size > MAX_RECORD:
            raise ValueError(f"larger than {MAX_RECORD} bytes")
        raw = os.read(fd, MAX_RECORD + 1)
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a spool record of format {FORMAT}")
    call = doc.get("call")
    if not isinstance(call, dict) or call.get("command") != "DEL":
        raise ValueError("its call is not a CNI DEL")
    spooled = doc.get("spooled_at")
    inode = doc.get("netns_inode", 0)
    if isinstance(spooled, bool) or not isinstance(spooled, int | float):
        raise ValueError(f"spooled_at {spooled!r} is not a time")
    if isinstance(inode, bool) or not isinstance(inode, int) or inode < 0:
        raise ValueError(f"netns_inode {inode!r} is not an inode number")
    return doc
