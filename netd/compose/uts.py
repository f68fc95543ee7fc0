"""A sandbox's own UTS namespace (hostname and NIS domain name), kept by a bind mount.

``ip netns exec`` switches only the network (and mount) namespace, so without this every
sandbox would show the host's hostname; docker gives each container its own (``hostname``,
``domainname``). netd compose makes one UTS namespace per sandbox and keeps it by bind-mounting
it on ``/run/netd-compose/uts/<sandbox>`` (what ``ip netns add`` does for network namespaces);
``compose exec`` enters it. Creating and changing one happens in a forked child, so the calling
process never changes namespace; only :func:`enter` (just before ``exec``) does.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import KernelError

UTS_DIR = Path("/run/netd-compose/uts")
CLONE_NEWUTS = 0x04000000  # <linux/sched.h>
MS_BIND = 4096  # <linux/mount.h>
MNT_DETACH = 2
HOST_NAME_MAX = 64  # <limits.h>: sethostname() refuses longer names

_libc = ctypes.CDLL(None, use_errno=True)


def _call(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _set_names(hostname: str, domainname: str | None) -> bool:
    """Set the current UTS namespace's names; True if one changed."""
    changed = False
    if os.uname().nodename != hostname:
        raw = hostname.encode()
        _call(_libc.sethostname(raw, len(raw)), f"sethostname({hostname!r})")
        changed = True
    if domainname is not None:
        buf = ctypes.create_string_buffer(HOST_NAME_MAX + 1)
        _call(_libc.getdomainname(buf, len(buf)), "getdomainname")
        if buf.value.decode() != domainname:
            raw = domainname.encode()
            _call(_libc.setdomainname(raw, len(raw)), f"setdomainname({domainname!r})")
            changed = True
    return changed


def _in_child(work: Callable[[], bool], what: str) -> bool:
    """Run ``work`` in a forked child (namespace changes stay there); its result or error."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 0
        try:
            os.close(rfd)
            os.write(wfd, b"1" if work() else b"0")
        except BaseException as exc:
            os.write(wfd, f"!{exc}".encode())
            code = 1
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        answer = pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    if not answer or answer.startswith("!"):
        raise KernelError(f"{what}: {answer[1:] or 'the helper process died'}")
    return answer == "1"


def path_of(sandbox: str) -> Path:
    """Where the sandbox's UTS namespace is bind-mounted."""
    return UTS_DIR / sandbox


def exists(sandbox: str) -> bool:
    """True if ``sandbox`` has a UTS namespace mounted (not just a leftover file)."""
    try:
        return os.stat(path_of(sandbox)).st_dev == os.stat("/proc/self/ns/uts").st_dev
    except OSError:
        return False


def ensure(sandbox: str, hostname: str, domainname: str | None) -> bool:
    """Make the sandbox's UTS namespace exist with these names; True if anything changed."""
    path = path_of(sandbox)
    if exists(sandbox):

        def update() -> bool:
            fd = os.open(path, os.O_RDONLY)
            try:
                _call(_libc.setns(fd, CLONE_NEWUTS), f"setns({path})")
            finally:
                os.close(fd)
            return _set_names(hostname, domainname)

        return _in_child(update, f"setting the hostname of sandbox {sandbox!r}")
    UTS_DIR.mkdir(parents=True, exist_ok=True)
    path.touch()

    def create() -> bool:
        _call(_libc.unshare(CLONE_NEWUTS), "unshare(CLONE_NEWUTS)")
        _set_names(hostname, domainname)
        src, dst = b"/proc/self/ns/uts", str(path).encode()
        _call(_libc.mount(src, dst, None, MS_BIND, None), f"bind-mounting on {path}")
        return True

    try:
        return _in_child(create, f"creating the UTS namespace of sandbox {sandbox!r}")
    except KernelError:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def remove(sandbox: str) -> None:
    """Unmount and delete the sandbox's UTS namespace file (a missing one is fine)."""
    path = path_of(sandbox)
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise KernelError(f"unmounting {path}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def enter(sandbox: str) -> None:
    """Move this process into the sandbox's UTS namespace (before exec'ing a command)."""
    if not exists(sandbox):
        return  # a sandbox made before netd kept one: the host's hostname, as it was
    fd = os.open(path_of(sandbox), os.O_RDONLY)
    try:
        _call(_libc.setns(fd, CLONE_NEWUTS), f"entering the UTS namespace of {sandbox!r}")
    finally:
        os.close(fd)
