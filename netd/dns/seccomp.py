"""A seccomp filter for the unprivileged DNS worker: only the system calls it needs.

The worker (:mod:`netd.dns.worker`) already runs as ``nobody`` with no capabilities and
``PR_SET_NO_NEW_PRIVS``. :func:`install_filter`, called once right after that privilege drop,
adds a second wall: a libseccomp allow-list (Debian package ``python3-seccomp``) so that even
code execution inside the worker cannot ``execve``, ``fork``, ``ptrace``, ``mount``, ``setns``,
``unshare``, load ``bpf`` programs, open netlink or packet sockets, bind new ports, open a file
for writing, create or remove files, or send signals to other processes.

How the list was found: the worker ran under ``strace -f -ff`` in a sandbox namespace (via
``python -m netd.dns.standalone``) while ``dig`` (UDP, TCP, v4, v6, PTR, forwarded, NXDOMAIN) and
``dnsperf`` queried it, records were reloaded and the upstream file was changed; every call
after the privilege drop is allowed below, plus what CPython's runtime needs on other paths
(threads, tracebacks that read source files, lazy imports, the ``stats`` control message's
``getrusage``). docs/security.md, "Defence in depth", shows how an operator checks it.

Denied calls fail with ``EPERM`` by default (the process survives; Python raises
``PermissionError`` naming the call, which is easy to debug; the manager restarts a worker that
exits). ``build_filter(kill=True)`` kills the process instead, for operators who prefer that.

It does not drop privileges (the worker does that first) and does not apply to the daemon.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from ..errors import KernelError

# Calls allowed with any arguments. Grouped by why the worker needs them.
ALLOWED: tuple[str, ...] = (
    # file descriptors already open, and read-only file access (upstream list, /proc/self,
    # Python source for tracebacks and lazy imports); opening is restricted in build_filter
    "read", "readv", "pread64", "write", "writev", "pwrite64", "close", "close_range", "lseek",
    "fstat", "newfstatat", "stat", "lstat", "statx", "fstatfs", "statfs", "access",
    "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd",
    "fcntl", "dup", "dup2", "dup3", "pipe2", "eventfd2",
    # the event loop
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "poll", "ppoll", "select", "pselect6",
    # sockets handed over by the manager, and forwarding to upstream resolvers (UDP/TCP);
    # socket() itself is restricted to inet/inet6/unix in build_filter, and bind() is absent
    "connect", "accept", "accept4", "listen", "shutdown",
    "sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg", "recvmmsg",
    "getsockopt", "setsockopt", "getsockname", "getpeername",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
    # threads (fork is refused: clone is allowed only with CLONE_THREAD, see build_filter)
    "futex", "set_robust_list", "rseq", "set_tid_address", "sched_yield",
    "sched_getaffinity", "gettid",
    # signals (to itself only: tgkill is restricted in build_filter)
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    # time, identity, randomness, accounting
    "clock_gettime", "clock_getres", "gettimeofday", "nanosleep", "clock_nanosleep", "time",
    "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
    "getgroups", "getrandom", "getrusage", "uname", "sysinfo", "times",
    # leaving
    "exit", "exit_group",
)  # fmt: skip

# Never allowed (they fall to the default action); named here so a test can check that no
# future edit of ALLOWED lets one of them in.
DENIED: tuple[str, ...] = (
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "bpf", "perf_event_open",
    "kexec_load", "init_module", "finit_module", "delete_module", "keyctl", "add_key",
    "bind", "kill", "setuid", "setgid", "setresuid", "setresgid", "setgroups", "capset",
    "prctl", "seccomp", "creat", "unlink", "unlinkat", "rename", "renameat", "renameat2",
    "mkdir", "mkdirat", "rmdir", "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat",
    "link", "linkat", "symlink", "symlinkat", "truncate", "ftruncate", "mknod", "mknodat",
    "io_uring_setup", "userfaultfd", "open_by_handle_at", "name_to_handle_at", "openat2",
)  # fmt: skip

# ioctl requests the runtime issues on its own descriptors (asm-generic/ioctls.h): FIONBIO for
# non-blocking sockets, FIOCLEX/FIONCLEX for close-on-exec, TCGETS from io's isatty(),
# FIONREAD to size a pending datagram. Anything else (TIOCSTI, SIOC*, NS_GET_*) is refused.
IOCTLS: tuple[int, ...] = (0x5421, 0x5451, 0x5450, 0x5401, 0x541B)

# Opening a file is allowed only with none of these flags: read-only, no create, no truncate.
_OPEN_FORBIDDEN = os.O_ACCMODE | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CLONE_THREAD = 0x00010000  # linux/include/uapi/linux/sched.h
_NR_SCMP_ERROR = -1  # seccomp.h: what resolve_syscall answers for a name unknown on the arch
_SOCKET_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def _module() -> Any:
    try:
        import seccomp  # Debian python3-seccomp; no type stubs
    except ImportError as exc:
        raise KernelError(
            "installing the DNS worker's seccomp filter: libseccomp's Python bindings are "
            "missing (apt-get install python3-seccomp)"
        ) from exc
    return seccomp


def build_filter(*, kill: bool = False) -> Any:
    """The worker's filter as a ``seccomp.SyscallFilter`` (not loaded yet).

    Default action ``ERRNO(EPERM)``, or ``KILL_PROCESS`` with ``kill=True``. Calls not known on
    this architecture (e.g. ``open`` on arm64) are skipped.
    """
    sc = _module()
    default = sc.KILL_PROCESS if kill else sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(default)
    # A syscall made through another ABI (32-bit int 0x80 on x86_64) is never legitimate here.
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)

    def allow(name: str, *args: Any) -> None:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) == _NR_SCMP_ERROR:
            return  # not on this architecture
        flt.add_rule(sc.ALLOW, name, *args)

    for name in ALLOWED:
        allow(name)
    allow("openat", sc.Arg(2, sc.MASKED_EQ, _OPEN_FORBIDDEN, 0))
    allow("open", sc.Arg(1, sc.MASKED_EQ, _OPEN_FORBIDDEN, 0))
    for family in _SOCKET_FAMILIES:
        allow("socket", sc.Arg(0, sc.EQ, family))
    allow("socketpair", sc.Arg(0, sc.EQ, socket.AF_UNIX))  # asyncio's self-pipe
    for request in IOCTLS:
        allow("ioctl", sc.Arg(1, sc.EQ, request))
    allow("clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, _CLONE_THREAD))
    # clone3 passes its flags in a struct seccomp cannot read: ENOSYS makes glibc fall back to
    # clone(), whose flags are checked above.
    if sc.resolve_syscall(sc.Arch.NATIVE, "clone3") != _NR_SCMP_ERROR:
        flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    allow("tgkill", sc.Arg(0, sc.EQ, os.getpid()))  # abort() and thread signals to itself
    allow("prlimit64", sc.Arg(0, sc.EQ, 0), sc.Arg(2, sc.EQ, 0))  # getrlimit only
    return flt


def install_filter(*, kill: bool = False) -> None:
    """Load the worker's filter into this process (and its future threads); irreversible.

    Call after dropping privileges and before serving. Raises KernelError if libseccomp is
    missing or the kernel refuses the filter.
    """
    flt = build_filter(kill=kill)
    try:
        flt.load()
    except (OSError, RuntimeError, ValueError) as exc:
        raise KernelError(f"loading the DNS worker's seccomp filter: {exc}") from exc


def seccomp_mode(pid: int | str = "self") -> int:
    """The ``Seccomp:`` field of /proc/PID/status: 0 none, 1 strict, 2 filter."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    raise KernelError(f'reading the seccomp mode of pid "{pid}": no Seccomp line in its status')
