"""Run one driver plugin call: a process, a request on stdin, bounded output, a deadline.

One process per call, as CNI plugins are run: nothing survives a call, so a plugin cannot leak
state into the daemon, and a plugin that hangs or crashes costs one call, never the daemon.
The plugin starts in a new session (its own process group); when the call ends (answer,
timeout, oversized output) the whole group is killed, so helpers it forked do not outlive it.
Output is bounded: stdout beyond ``stdout_limit`` fails the call, stderr is kept up to
``stderr_limit`` and the rest discarded (read, so the plugin never blocks on a full pipe).

Blocking: called from a worker thread. It neither parses nor judges the answer
(:mod:`netd.drivers.plugin_records` does).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

# A plugin gets a fixed, small environment: the daemon's own (NOTIFY_SOCKET, LISTEN_FDS,
# credentials directories under systemd) is none of its business.
PLUGIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Finished:
    """A plugin process that exited on its own within the deadline."""

    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float


class PluginTimeout(Exception):
    """The plugin did not exit within its deadline; it was killed (``stderr``: what it said)."""

    def __init__(self, seconds: float, stderr: bytes) -> None:
        super().__init__(f"no answer within {seconds:g} s")
        self.seconds = seconds
        self.stderr = stderr


class PluginOutputTooLarge(Exception):
    """The plugin printed more than ``limit`` bytes on stdout; it was killed."""

    def __init__(self, limit: int, stderr: bytes) -> None:
        super().__init__(f"printed more than {limit} bytes on stdout")
        self.limit = limit
        self.stderr = stderr


def run_plugin(
    argv: list[str],
    payload: bytes,
    *,
    timeout: float,
    env: dict[str, str],
    stdout_limit: int,
    stderr_limit: int,
) -> Finished:
    """Run ``argv`` with ``payload`` on stdin; OSError if it cannot be started."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        cwd="/",
        env=env,
    )
    try:
        out, err = _exchange(proc, payload, timeout, started + timeout, stdout_limit, stderr_limit)
    finally:
        # The leader is not reaped yet (only proc.wait() below reaps it), so its pid still
        # names this process group and cannot have been reused: the kill hits only the plugin.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
    return Finished(proc.returncode, out, err, time.monotonic() - started)


def _exchange(
    proc: subprocess.Popen[bytes],
    payload: bytes,
    timeout: float,
    deadline: float,
    stdout_limit: int,
    stderr_limit: int,
) -> tuple[bytes, bytes]:
    """Write the request, read stdout and stderr until the leader exits; raise on a limit."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
    for fd in (stdin, stdout, stderr):
        os.set_blocking(fd, False)
    pidfd = os.pidfd_open(proc.pid)  # readable once the leader exits (Linux 5.3)
    out, err = bytearray(), bytearray()
    pending = memoryview(payload)
    with selectors.DefaultSelector() as sel:
        sel.register(stdout, selectors.EVENT_READ)
        sel.register(stderr, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        sel.register(stdin, selectors.EVENT_WRITE)
        try:
            exited = False
            while not exited:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PluginTimeout(timeout, bytes(err))
                for key, _ in sel.select(remaining):
                    if key.fd == pidfd:
                        exited = True
                    elif key.fd == stdin:
                        pending = _write(sel, proc, stdin, pending)
                    else:
                        _read(sel, key.fd, out if key.fd == stdout else err)
                if len(out) > stdout_limit:
                    raise PluginOutputTooLarge(stdout_limit, bytes(err))
                del err[stderr_limit:]
            # What the leader wrote before exiting is in the pipes: take it, without waiting
            # for an EOF that a forked helper holding the pipe open would delay.
            for fd, buf in ((stdout, out), (stderr, err)):
                if fd in sel.get_map():
                    _drain(fd, buf, stdout_limit + 1)
            if len(out) > stdout_limit:
                raise PluginOutputTooLarge(stdout_limit, bytes(err))
            del err[stderr_limit:]
        finally:
            os.close(pidfd)
    return bytes(out), bytes(err)


def _write(
    sel: selectors.BaseSelector, proc: subprocess.Popen[bytes], fd: int, pending: memoryview
) -> memoryview:
    try:
        written = os.write(fd, pending[:65536])
    except BlockingIOError:
        return pending
    except BrokenPipeError:
        written = len(pending)  # it stopped reading: its answer will say what it made of it
    pending = pending[written:]
    if not pending:
        sel.unregister(fd)
        assert proc.stdin is not None
        proc.stdin.close()  # EOF: the request is complete
    return pending


def _read(sel: selectors.BaseSelector, fd: int, buf: bytearray) -> None:
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return
    if chunk:
        buf += chunk
    else:
        sel.unregister(fd)


def _drain(fd: int, buf: bytearray, limit: int) -> None:
    while len(buf) <= limit:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        buf += chunk
