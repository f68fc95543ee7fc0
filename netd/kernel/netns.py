"""Network namespaces: validate a namespace path, and open netlink sockets inside it.

This is the only module of netd that calls ``setns(2)``. It does so from one dedicated thread that
does nothing else: it enters the target namespace, opens one socket there (``NETLINK_ROUTE`` for
link work; UDP or TCP for the DNS listener at 127.0.0.11 inside a container, see
:mod:`netd.dns.netns_listen`) and goes back to the daemon's namespace. A socket stays bound to the
namespace it was created in, so the threads that do the work never switch namespace (STYLE.md,
"Never setns() a daemon thread"); if going back ever failed, the thread would exit rather than
serve again. pyroute2's ``IPRoute(netns=path)`` does the same by forking a helper process (~14 ms
per open); a fresh thread per socket cost ~0.3 ms, the dedicated thread ~0.04 ms.

It also answers "which namespace am I in?" (:func:`own_netns_inode`, :func:`is_initial_netns`) so
callers can refuse to configure the machine's initial namespace.

It does not create or delete namespaces (the runtime owns them) and does no link work itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import queue
import re
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute

from ..errors import InvalidInput, KernelError

CLONE_NEWNET = 0x40000000  # linux/include/uapi/linux/sched.h
NSFS_MAGIC = 0x6E736673  # linux/include/uapi/linux/magic.h
NS_GET_NSTYPE = 0xB703  # linux/include/uapi/linux/nsfs.h: _IO(0xb7, 0x3)
PROC_NET_INIT_INO = 0xEFFFFFF9  # linux/include/linux/proc_ns.h: init_net's fixed inode
NETLINK_ROUTE = 0
_PROC_NS_LINK = re.compile(r"[a-z_]+:\[\d+\]\Z")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.unshare.restype = ctypes.c_int
FRESH = -1  # socket_in(FRESH, ...): a socket in a new, empty namespace (kernel feature probes)


class _StatFs(ctypes.Structure):
    # struct statfs on 64-bit Linux (bits/statfs.h); only f_type is read.
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


_libc.fstatfs.argtypes = (ctypes.c_int, ctypes.POINTER(_StatFs))
_libc.fstatfs.restype = ctypes.c_int


def netns_inode(path: str) -> int:
    """Inode number of the namespace file at ``path`` (follows symlinks)."""
    return os.stat(path).st_ino


def own_netns_inode() -> int:
    """Inode of the network namespace this process runs in."""
    return netns_inode("/proc/self/ns/net")


def is_initial_netns() -> bool:
    """True when this process runs in the machine's initial network namespace.

    Compares with PID 1's namespace when readable; where /proc/1/ns is hidden (containers, this
    CI machine) falls back to init_net's fixed inode number.
    """
    own = own_netns_inode()
    try:
        return own == netns_inode("/proc/1/ns/net")
    except OSError:
        return own == PROC_NET_INIT_INO


def open_netns(path: str, inode: int = 0) -> int:
    """Open ``path`` as a network namespace and return the fd (O_CLOEXEC); caller closes it.

    Refuses (InvalidInput on field ``netns``) anything that is not an nsfs network namespace, the
    daemon's own namespace and the machine's initial one: configuring a "container" there would
    change the host. Never blocks: FIFOs and devices are refused without being opened.

    ``inode`` (non-zero) pins the namespace: the one recorded at attach, or the one a rootless
    caller's ownership was verified on. A path that now leads elsewhere (``/proc/<pid>/ns/net``
    after the pid was reused) is refused rather than configured.
    """
    if not isinstance(path, str) or not path or "\0" in path:
        raise InvalidInput("netns", path, "must be a non-empty path to a network namespace")
    if not os.path.isabs(path):
        raise InvalidInput("netns", path, "must be an absolute path")
    # Resolve first, then refuse symlinks on the final open: the checked file is the opened one.
    # /proc/<pid>/ns/net is a "magic" link whose target ("net:[4026...]") is no path; it is
    # followed as is, which is safe because the opened file is checked below either way.
    try:
        real = os.path.realpath(path)
    except OSError as exc:  # e.g. EACCES on a hidden /proc/1/ns
        raise InvalidInput("netns", path, f"cannot resolve: {exc.strerror}") from exc
    # O_PATH first: opening a FIFO for reading would block the daemon until a writer came, and
    # opening a device can have side effects (a watchdog arms, a tape rewinds). An O_PATH open
    # does neither; only a file proven to be on nsfs is then opened for real.
    flags = os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW
    if not os.path.lexists(real) and _is_proc_ns_link(path):
        real, flags = path, os.O_PATH | os.O_CLOEXEC
    try:
        pfd = os.open(real, flags)
    except FileNotFoundError as exc:
        raise InvalidInput("netns", path, "no such file") from exc
    except OSError as exc:
        raise InvalidInput("netns", path, f"cannot open: {exc.strerror}") from exc
    try:
        st = _check_nsfs_file(pfd, path)
        # Reopen the very file the O_PATH fd holds (setns and ioctl need a real fd).
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput("netns", path, f"cannot open: {exc.strerror}") from exc
    finally:
        os.close(pfd)
    try:
        again = _check_nsfs_file(fd, path)
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
            raise InvalidInput("netns", path, "changed while being opened")
        if inode and again.st_ino != inode:
            raise InvalidInput(
                "netns",
                path,
                f"now leads to net:[{again.st_ino}], not the namespace net:[{inode}] it was "
                "attached or verified as",
            )
        _check_netns_fd(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_proc_ns_link(path: str) -> bool:
    try:
        return _PROC_NS_LINK.match(os.readlink(path)) is not None
    except OSError:
        return False


def _check_nsfs_file(fd: int, path: str) -> os.stat_result:
    """The file behind ``fd`` (O_PATH is enough) must be a regular file on nsfs."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        # nsfs files are regular files to fstat; a directory, FIFO, device or symlink never is.
        raise InvalidInput("netns", path, "not a namespace file")
    buf = _StatFs()
    if _libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise KernelError(f'checking netns "{path}": {os.strerror(err)}')
    if buf.f_type != NSFS_MAGIC:
        raise InvalidInput("netns", path, "not a namespace file (not on nsfs)")
    return st


def _initial_netns_inodes() -> set[int]:
    inodes = {PROC_NET_INIT_INO}  # fixed on recent kernels; older ones number init_net freely
    # Where /proc/1/ns is hidden (containers, CI) the fixed inode is all we have.
    with contextlib.suppress(OSError):
        inodes.add(netns_inode("/proc/1/ns/net"))
    return inodes


def _check_netns_fd(fd: int, path: str) -> None:
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        raise InvalidInput("netns", path, f"NS_GET_NSTYPE failed: {exc.strerror}") from exc
    if nstype != CLONE_NEWNET:
        raise InvalidInput("netns", path, "not a network namespace")
    ino = os.fstat(fd).st_ino
    if ino == own_netns_inode():
        raise InvalidInput("netns", path, "is the daemon's own network namespace")
    # When the daemon itself runs in a namespace (tests, a container), the machine's initial
    # namespace is not its own, yet configuring a "container" there would change the host.
    if ino in _initial_netns_inodes():
        raise InvalidInput("netns", path, "is the machine's initial network namespace")


class _Request:
    """One socket to make in namespace ``fd``; ``done`` is set once ``out`` holds the answer."""

    __slots__ = ("done", "fd", "kind", "out")

    def __init__(self, fd: int, kind: tuple[int, int, int]) -> None:
        self.fd = fd
        self.kind = kind  # (family, type, protocol)
        self.out: socket.socket | BaseException | None = None
        self.done = threading.Event()


class _SocketMaker:
    """The one thread that enters namespaces: a socket per request, then back home."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def socket_in(self, fd: int, kind: tuple[int, int, int]) -> socket.socket:
        request = _Request(fd, kind)
        self._ensure_thread()
        self._requests.put(request)
        while not request.done.wait(1.0):
            self._ensure_thread()  # the thread quit (stranded): a new one serves the queue
        out = request.out
        if not isinstance(out, socket.socket):
            where = "a new namespace" if fd == FRESH else f"netns fd {fd}"
            raise KernelError(f"opening a socket in {where}: {out}") from out
        return out

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                self._thread = threading.Thread(
                    target=self._serve, args=(home,), name="netd-setns", daemon=True
                )
                self._thread.start()

    def _serve(self, home: int) -> None:
        try:
            while True:
                request = self._requests.get()
                try:
                    if request.fd == FRESH:
                        _unshare_net()
                    else:
                        _setns(request.fd)
                    try:
                        request.out = socket.socket(*request.kind)
                    finally:
                        _setns(home)
                except OSError as exc:
                    if isinstance(request.out, socket.socket):
                        request.out.close()
                    request.out = exc
                    if os.stat("/proc/thread-self/ns/net").st_ino != os.fstat(home).st_ino:
                        request.done.set()
                        return  # stuck in a container's namespace: never serve again
                request.done.set()
        finally:
            os.close(home)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _unshare_net() -> None:
    # This thread only: unshare(CLONE_NEWNET) acts on the calling task, and _serve goes home.
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_MAKER = _SocketMaker()


def netlink_socket_in(fd: int) -> socket.socket:
    """A NETLINK_ROUTE socket created inside the namespace ``fd`` (by the setns thread)."""
    return _MAKER.socket_in(fd, (socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))


def socket_in(fd: int, family: int, type_: int) -> socket.socket:
    """A socket of ``family``/``type_`` created inside the namespace ``fd`` (unbound).

    Binding and listening act on the namespace the socket was made in, whichever thread does
    them, so the caller binds it from its own thread.
    """
    return _MAKER.socket_in(fd, (family, type_, 0))


def netlink_socket_in_fresh_netns() -> socket.socket:
    """A NETLINK_ROUTE socket in a new, empty namespace that lives as long as the socket.

    For probes that must not touch any real namespace (which link kinds this kernel has).
    """
    return _MAKER.socket_in(FRESH, (socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))


def iproute_in_fd(fd: int) -> IPRoute:
    """An ``IPRoute`` whose socket lives in the namespace ``fd``; the caller closes it."""
    return IPRoute(use_socket=netlink_socket_in(fd), groups=0)


@contextmanager
def iproute_in(path: str) -> Iterator[IPRoute]:
    """``with iproute_in("/run/netns/c1") as ipr:`` — validated, opened, closed."""
    fd = open_netns(path)
    try:
        ipr = iproute_in_fd(fd)
    finally:
        os.close(fd)
    try:
        yield ipr
    finally:
        ipr.close()
