"""The DNS worker's seccomp filter: what it lets through and what it refuses.

Each check runs in a fresh child interpreter that installs the filter (irreversible) and then
tries things; the test process itself is never filtered. No network traffic: sockets are only
created, connected (UDP connect sends nothing) or paired.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

seccomp = pytest.importorskip("seccomp")

from netd.dns import seccomp as filt  # noqa: E402

CHILD = textwrap.dedent(
    """
    import asyncio, ctypes, errno, fcntl, json, os, resource, socket, subprocess, sys, threading
    from netd.dns.seccomp import install_filter, seccomp_mode

    install_filter()
    out = {"mode": seccomp_mode()}

    def attempt(name, fn):
        try:
            fn()
            out[name] = "ok"
        except OSError as exc:
            out[name] = errno.errorcode.get(exc.errno, str(exc.errno))

    libc = ctypes.CDLL(None, use_errno=True)

    def libc_call(fn, *args):
        if fn(*args) != 0:
            raise OSError(ctypes.get_errno(), "libc")

    # refused
    attempt("execve", lambda: os.execv("/bin/true", ["true"]))
    attempt("fork", os.fork)
    attempt("subprocess", lambda: subprocess.run(["/bin/true"]))
    attempt("system", lambda: (_ for _ in ()).throw(OSError(errno.EPERM, "system"))
            if os.system("true") != 0 else None)
    attempt("open_write", lambda: open("/tmp/netd-seccomp-must-not-exist", "w"))
    attempt("open_append", lambda: open("/proc/self/status", "a"))
    attempt("open_rdwr", lambda: os.open("/proc/self/status", os.O_RDWR))
    attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))
    attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
    attempt("bind", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.1", 0)))
    attempt("kill_parent", lambda: os.kill(os.getppid(), 0))
    attempt("unlink", lambda: os.unlink("/tmp/netd-seccomp-must-not-exist"))
    attempt("mkdir", lambda: os.mkdir("/tmp/netd-seccomp-must-not-exist"))
    attempt("setns", lambda: libc_call(libc.setns, os.open("/proc/self/ns/net", os.O_RDONLY), 0))
    attempt("unshare", lambda: libc_call(libc.unshare, 0x40000000))
    attempt("mount", lambda: libc_call(libc.mount, b"none", b"/mnt", b"tmpfs", 0, None))
    attempt("ptrace", lambda: libc_call(libc.ptrace, 16, os.getppid(), None, None))
    attempt("prctl", lambda: libc_call(libc.prctl, 15, b"x", 0, 0, 0))
    attempt("tiocsti", lambda: fcntl.ioctl(0, 0x5412, b"x"))
    # still allowed: what the worker does
    attempt("open_read", lambda: open("/proc/self/status").read())
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attempt("udp_connect", lambda: udp.connect(("127.0.0.1", 53)))  # connect sends nothing
    attempt("tcp6_socket", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close())
    attempt("socketpair", lambda: [s.close() for s in socket.socketpair()])
    attempt("getrusage", lambda: resource.getrusage(resource.RUSAGE_SELF))
    attempt("getrlimit", lambda: resource.getrlimit(resource.RLIMIT_NOFILE))

    def thread():
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
    attempt("thread", thread)

    async def loop():
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=a)
        b.sendall(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        b.close()
        await asyncio.get_running_loop().run_in_executor(None, lambda: None)
    attempt("asyncio", lambda: asyncio.run(loop()))
    print(json.dumps(out))
    """
)


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, stdin=None
    )


def test_allowed_and_denied_lists_are_disjoint() -> None:
    assert not set(filt.ALLOWED) & set(filt.DENIED)
    for name in ("execve", "ptrace", "mount", "setns", "unshare", "bpf", "bind", "kill"):
        assert name in filt.DENIED


def test_filter_refuses_what_the_worker_must_not_do() -> None:
    proc = _run_child(CHILD)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got.pop("mode") == 2
    refused = [
        "execve", "fork", "subprocess", "system", "open_write", "open_append", "open_rdwr",
        "netlink", "packet", "bind", "kill_parent", "unlink", "mkdir", "setns", "unshare",
        "mount", "ptrace", "prctl", "tiocsti",
    ]  # fmt: skip
    allowed = [
        "open_read", "udp_connect", "tcp6_socket", "socketpair", "getrusage", "getrlimit",
        "thread", "asyncio",
    ]  # fmt: skip
    assert {k: got[k] for k in refused} == dict.fromkeys(refused, "EPERM")
    assert {k: got[k] for k in allowed} == dict.fromkeys(allowed, "ok")


def test_kill_mode_kills_on_execve() -> None:
    code = (
        "import os\n"
        "from netd.dns.seccomp import install_filter\n"
        "install_filter(kill=True)\n"
        "print('filtered', flush=True)\n"
        "os.execv('/bin/true', ['true'])\n"
    )
    proc = _run_child(code)
    assert proc.stdout == "filtered\n"
    assert proc.returncode == -signal.SIGSYS


def test_seccomp_mode_of_an_unfiltered_process() -> None:
    # This test process never installs a filter (if the CI itself ran under one, this would
    # say 2, and the assertion in the child test above would prove nothing new).
    assert filt.seccomp_mode() == 0


def test_build_filter_exports_the_rules() -> None:
    flt = filt.build_filter()
    with open("/dev/null", "w") as sink:  # smoke: libseccomp accepts every rule we add
        flt.export_bpf(sink)
