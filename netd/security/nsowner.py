"""Who owns a network namespace, asked of the kernel: the rootless attach checks.

A non-root caller may only attach a network namespace that is theirs. "Theirs" is decided from
the kernel, never from the request:

1. The namespace file is opened through :func:`netd.kernel.netns.open_netns` (the one gate for
   caller paths: nsfs, a network namespace, not the daemon's, not the machine's initial one).
2. ``NS_GET_USERNS`` on that fd gives the user namespace owning the network namespace, and
   ``NS_GET_OWNER_UID`` on it the uid (in the daemon's user namespace) of the process that
   created that user namespace. ``NS_GET_PARENT`` walks up towards the daemon's own user
   namespace. The caller owns the network namespace when one user namespace on that chain,
   below the daemon's own, was created by the caller's uid: the creator of a user namespace
   holds every capability in it and in all of its descendants (user_namespaces(7)), so such
   a network namespace is already under the caller's control. A namespace owned directly by the
   daemon's user namespace (made by root, ``ip netns add``) never is.
3. The caller must be able to open the path itself: a child process with the caller's uid, gid
   and groups opens it (``/proc/<pid>/ns/net`` needs ptrace-read access to that process; a bind
   mount needs search permission on every directory on the way). So a caller cannot use the
   daemon to reach a path they could not reach.

Pure parts (:func:`ioc`, :func:`decide`) are apart from the ioctls and the child process.
This module decides nothing about networks or quotas (``rootless``) and changes nothing.
"""

from __future__ import annotations

import array
import fcntl
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InvalidInput, KernelError, PermissionDenied
from ..model import Caller

NSIO = 0xB7  # linux/include/uapi/linux/nsfs.h


def ioc(kind: int, nr: int) -> int:
    """``_IO(kind, nr)``: an ioctl number without data direction or size (asm-generic/ioctl.h)."""
    return (kind << 8) | nr


NS_GET_USERNS = ioc(NSIO, 0x1)
NS_GET_PARENT = ioc(NSIO, 0x2)
NS_GET_OWNER_UID = ioc(NSIO, 0x4)
MAX_DEPTH = 33  # the kernel nests user namespaces at most 32 deep (kernel/user_namespace.c)
OPEN_TIMEOUT = 5.0


@dataclass(frozen=True)
class UserNs:
    """One user namespace on the chain from a network namespace's owner upwards."""

    inode: int
    owner_uid: int


def decide(chain: Sequence[UserNs], uid: int) -> bool:
    """True when a user namespace of ``chain`` (the daemon's own already cut off) is ``uid``'s."""
    return any(ns.owner_uid == uid for ns in chain)


def describe(chain: Sequence[UserNs]) -> str:
    """The chain for a message: ``user:[4026532178] (owner uid 4242) <- ...``, or root's."""
    if not chain:
        return "the daemon's own user namespace (root)"
    return " in ".join(f"user:[{ns.inode}] created by uid {ns.owner_uid}" for ns in chain)


def _owner_uid(userns_fd: int) -> int:
    buf = array.array("I", [0])  # uid_t
    fcntl.ioctl(userns_fd, NS_GET_OWNER_UID, buf, True)
    return int(buf[0])


def owner_chain(netns_fd: int, *, stop_inode: int | None = None) -> list[UserNs]:
    """User namespaces owning ``netns_fd``, innermost first, up to ``stop_inode`` (excluded).

    ``stop_inode`` defaults to the daemon's own user namespace; the walk also ends where the
    kernel refuses ``NS_GET_PARENT`` (EPERM: the parent is outside our view).
    """
    if stop_inode is None:
        stop_inode = os.stat("/proc/self/ns/user").st_ino
    try:
        fd = fcntl.ioctl(netns_fd, NS_GET_USERNS)
    except OSError as exc:
        raise KernelError(f"NS_GET_USERNS on netns fd {netns_fd}: {exc.strerror}") from exc
    chain: list[UserNs] = []
    try:
        for _ in range(MAX_DEPTH):
            inode = os.fstat(fd).st_ino
            if inode == stop_inode:
                break
            try:
                chain.append(UserNs(inode, _owner_uid(fd)))
            except OSError as exc:
                raise KernelError(f"NS_GET_OWNER_UID on user:[{inode}]: {exc.strerror}") from exc
            try:
                parent = fcntl.ioctl(fd, NS_GET_PARENT)
            except OSError:
                break  # EPERM: no parent we may see (we are at or below the top)
            os.close(fd)
            fd = parent
    finally:
        os.close(fd)
    return chain


def check_owner(path: str, uid: int) -> int:
    """The nsfs inode of the namespace at ``path``; PermissionDenied (field ``netns``) unless
    it belongs to ``uid``.

    InvalidInput if ``path`` is not a usable network namespace at all (see ``open_netns``). The
    inode is read from the very fd whose owner was checked: the attach pins it, so a path that
    leads elsewhere by the time the driver opens it (a reused /proc/<pid>) is refused.
    """
    from ..kernel.netns import open_netns

    fd = open_netns(path)
    try:
        inode = os.fstat(fd).st_ino
        chain = owner_chain(fd)
    finally:
        os.close(fd)
    if not decide(chain, uid):
        raise PermissionDenied(
            f"attaching netns {path!r}: uid {uid} does not own it; the kernel says its owner is "
            f"{describe(chain)}. A rootless caller may attach only network namespaces created "
            "in a user namespace it created",
            field="netns",
            value=path,
        )
    return inode


def check_can_open(path: str, caller: Caller, groups: Iterable[int]) -> None:
    """PermissionDenied unless a process with the caller's uid, gid and groups can open ``path``.

    Only called on paths already proven to be network namespaces, so the open has no side
    effect (no FIFO to block on, no device). Costs one ``/bin/sh`` child, ~2.5 ms.
    """
    try:
        out = subprocess.run(
            ["/bin/sh", "-c", 'exec 3< "$1"', "netd-open-check", path],
            user=caller.uid,
            group=caller.gid,
            extra_groups=sorted(set(groups) - {caller.gid}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            timeout=OPEN_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelError(f"checking that uid {caller.uid} can open {path!r}: {exc}") from exc
    if out.returncode != 0:
        why = out.stderr.decode("utf-8", "replace").strip().rsplit(":", 1)[-1].strip()
        raise PermissionDenied(
            f"attaching netns {path!r}: uid {caller.uid} cannot open it itself "
            f"({why or 'exit ' + str(out.returncode)})",
            field="netns",
            value=path,
        )


def verify(path: str, caller: Caller, groups: Iterable[int]) -> int:
    """Both checks, kernel ownership first (its refusal is the more telling one); the inode of
    the namespace whose ownership was checked, to pin the attach to it."""
    if not isinstance(path, str) or not path:
        raise InvalidInput("netns", path, "must be a non-empty path to a network namespace")
    inode = check_owner(path, caller.uid)
    check_can_open(path, caller, groups)
    return inode
