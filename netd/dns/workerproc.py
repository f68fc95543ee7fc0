"""One DNS worker process as the daemon sees it: start, find again, talk to, retire, stop.

:class:`~netd.dns.manager.DnsManager` decides what the workers serve; this module owns their
processes and control connections. Two ways to run a worker:

- attached (``run_dir`` None: the standalone harness, tests): a socketpair, the worker dies
  with its parent (PR_SET_PDEATHSIG) and exits when the connection closes;
- detached (the daemon): its own session, cwd ``/``, a listening control socket at
  ``<run_dir>/worker-<i>.sock`` and a record ``worker-<i>.json`` (:mod:`netd.dns.handover`).
  It outlives the daemon, and the next daemon :func:`find`\\ s and adopts it, or replaces it.

Either way stdin, stdout and stderr are /dev/null: the worker never holds the daemon's log.
Its log records come over a pipe (``--log-fd``) that the daemon's
:class:`~netd.dns.logchan.LogPump` reads; a daemon that adopts a worker sends it a new pipe
(:func:`attach_log`).

Nothing here knows about records or which sockets a worker should serve.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Unavailable
from .control import ChannelClosed, Receiver, send_message
from .handover import (
    VerifiedProcess,
    WorkerRecord,
    build_id,
    control_path,
    ensure_run_dir,
    forget,
    read_records,
    record_path,
    start_time,
    write_record,
)
from .logchan import LogPump

log = logging.getLogger(__name__)

ACK_TIMEOUT = 5.0
RETIRE_TIMEOUT = 2.0


@dataclass(frozen=True)
class WorkerSpec:
    """How workers are started; two workers with equal settings and build are interchangeable."""

    domain: str
    ttl: int
    user: str
    upstreams_from: str
    workers: int
    run_dir: Path | None = None
    build: str = field(default_factory=build_id)

    def settings(self) -> dict[str, Any]:
        """What a worker was started with (compared on adoption)."""
        return {
            "domain": self.domain,
            "ttl": self.ttl,
            "user": self.user,
            "upstreams_from": self.upstreams_from,
            "workers": self.workers,
        }

    def argv(self) -> list[str]:
        """The worker's command line, without the control-socket arguments."""
        return [
            sys.executable, "-m", "netd.dns.worker",
            "--user", self.user,
            "--domain", self.domain,
            "--ttl", str(self.ttl),
            "--upstreams-from", self.upstreams_from,
        ]  # fmt: skip


class WorkerProc:
    """A running worker: its process (our child or adopted) and its control connection."""

    def __init__(
        self,
        index: int,
        ctrl: socket.socket | None,
        *,
        popen: subprocess.Popen[bytes] | None = None,
        handle: VerifiedProcess | None = None,
        record: WorkerRecord | None = None,
    ) -> None:
        self.index = index
        self.ctrl = ctrl
        self.popen = popen  # set when this daemon started it (it reaps it)
        self.handle = handle  # pidfd, for a detached worker (ours or adopted)
        self.record = record
        self._seq = 0

    @property
    def pid(self) -> int:
        """The worker's pid."""
        if self.popen is not None:
            return self.popen.pid
        assert self.handle is not None
        return self.handle.pid

    def alive(self) -> bool:
        """True until the process has exited (an exited child of ours is reaped here)."""
        if self.popen is not None:
            return self.popen.poll() is None
        return self.handle is not None and self.handle.alive()

    def exit_status(self) -> str:
        """How it ended, for the log."""
        if self.popen is not None and self.popen.returncode is not None:
            return f"status {self.popen.returncode}"
        return "an unknown status (adopted)"

    def request(
        self, msg: dict[str, Any], fds: list[int] | None = None
    ) -> tuple[dict[str, Any], list[int]]:
        """Send one message and wait for its acknowledgement: (reply, descriptors it carried)."""
        ctrl = self.ctrl
        if ctrl is None:
            raise Unavailable(f"DNS worker {self.index} is not connected")
        self._seq += 1
        msg["seq"] = self._seq
        try:
            send_message(ctrl, msg, fds)
            receiver = Receiver(ctrl)
            deadline = time.monotonic() + ACK_TIMEOUT
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([ctrl], [], [], left)[0]:
                    raise Unavailable(f"DNS worker {self.index} did not acknowledge {msg['op']!r}")
                got = receiver.read()
                if got is None:
                    continue
                if got[0].get("ack") == self._seq:
                    return got
                for fd in got[1]:  # a late answer to an earlier request
                    os.close(fd)
        except (OSError, ChannelClosed) as exc:
            raise Unavailable(f"sending {msg['op']!r} to DNS worker {self.index}: {exc}") from exc

    def disconnect(self) -> None:
        """Close the control connection; a detached worker keeps serving."""
        if self.ctrl is not None:
            self.ctrl.close()
            self.ctrl = None

    def detach(self) -> None:
        """Let go of the process without stopping it (the daemon is exiting)."""
        self.disconnect()
        if self.handle is not None:
            self.handle.close()

    def kill(self) -> None:
        """Stop the process for good (SIGTERM, then SIGKILL) and remove its record."""
        self.disconnect()
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=RETIRE_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.handle is not None:
            self.handle.stop(RETIRE_TIMEOUT)

    def retire(self) -> None:
        """Tell the worker to stop serving and exit (another serves its sockets now)."""
        with contextlib.suppress(Unavailable):
            self.request({"op": "retire"})
        if self.handle is not None and self.handle.wait(RETIRE_TIMEOUT):
            self.handle.close()
        self.kill()  # only if it did not exit by itself; through the pidfd or Popen


def _user_uid(user: str) -> int:
    if os.geteuid() != 0:
        return os.getuid()  # the worker cannot change user without root
    return pwd.getpwnam(user).pw_uid


def attach_log(proc: WorkerProc, pump: LogPump) -> None:
    """Give a worker found running a pipe to this daemon for its log records (and backlog)."""
    read_fd, write_fd = pump.open()
    pump.watch(read_fd, proc.pid)  # before sending: the backlog may not fit in the pipe
    try:
        proc.request({"op": "log"}, [write_fd])
    except Unavailable as exc:
        log.warning("DNS worker %d (pid %d): no log channel: %s", proc.index, proc.pid, exc)
    finally:
        os.close(write_fd)


def _popen(cmd: list[str], keep: list[int], pump: LogPump, **kw: Any) -> subprocess.Popen[bytes]:
    """Start a worker with /dev/null as stdio and a log pipe (``--log-fd``) that ``pump`` reads."""
    read_fd, write_fd = pump.open()
    try:
        popen = subprocess.Popen(
            [*cmd, "--log-fd", str(write_fd)],
            pass_fds=[*keep, write_fd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kw,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    pump.watch(read_fd, popen.pid)
    return popen


def spawn(spec: WorkerSpec, index: int, pump: LogPump) -> WorkerProc:
    """Start worker ``index`` (detached with a record if ``spec.run_dir``) and say hello."""
    if spec.run_dir is None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            cmd = [*spec.argv(), "--control-fd", str(child.fileno())]
            popen = _popen(cmd, [child.fileno()], pump)
        finally:
            child.close()
        return WorkerProc(index, parent, popen=popen)
    ensure_run_dir(spec.run_dir)
    path = control_path(spec.run_dir, index)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listener.bind(str(path))
        listener.listen(4)
        cmd = [
            *spec.argv(),
            "--listen-fd", str(listener.fileno()),
            "--owner-uid", str(os.getuid()),
        ]  # fmt: skip
        # Own session and process group: a signal to the daemon's group (a terminal's ^C, the
        # service manager's) does not reach it.
        popen = _popen(cmd, [listener.fileno()], pump, start_new_session=True, cwd="/")
    finally:
        listener.close()
    handle = VerifiedProcess(popen.pid, os.pidfd_open(popen.pid))
    token = secrets.token_hex(16)
    record = WorkerRecord(
        index=index,
        pid=popen.pid,
        start_time=start_time(popen.pid) or 0,
        uid=_user_uid(spec.user),
        token=token,
        build=spec.build,
        settings=spec.settings(),
    )
    write_record(spec.run_dir, record)
    proc = WorkerProc(index, None, popen=popen, handle=handle, record=record)
    try:
        proc.ctrl = _connect(path)
        proc.request({"op": "hello", "token": token})
    except (OSError, Unavailable):
        proc.kill()
        forget(spec.run_dir, index)
        raise
    return proc


def _connect(path: Path) -> socket.socket:
    """A control connection to the worker listening at ``path``."""
    ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ctrl.settimeout(ACK_TIMEOUT)
        ctrl.connect(str(path))
        ctrl.settimeout(None)
        peer = struct.unpack("3i", ctrl.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        ctrl.close()
        raise
    # SO_PEERCRED here names whoever called listen(): the daemon that started the worker, not
    # the worker, so the pid and token in ``hello`` prove who answers. Still refuse a socket
    # some other uid listens on.
    if peer[1] != os.getuid():
        ctrl.close()
        raise OSError(f"control socket {path} is held by uid {peer[1]}, not {os.getuid()}")
    return ctrl


@dataclass
class Found:
    """A worker left running by an earlier daemon, verified and connected (not yet adopted)."""

    proc: WorkerProc
    hello: dict[str, Any]
    compatible: bool
    why: str  # why it is not compatible ("" if it is)


def find(spec: WorkerSpec) -> list[Found]:
    """The workers recorded in ``spec.run_dir`` that are alive, verified and answer ``hello``.

    A record whose process is gone (or is not a netd worker any more) is removed; a verified
    worker that cannot be talked to is stopped (through its pidfd) and its record removed.
    """
    assert spec.run_dir is not None
    out: list[Found] = []
    for index, rec in sorted(read_records(spec.run_dir).items()):
        handle, reason = VerifiedProcess.open(rec)
        if handle is None:
            log.info("DNS worker %d from an earlier daemon is not running: %s", index, reason)
            forget(spec.run_dir, index)
            continue
        proc = WorkerProc(index, None, handle=handle, record=rec)
        try:
            proc.ctrl = _connect(control_path(spec.run_dir, index))
            hello, fds = proc.request({"op": "hello"})
            for fd in fds:
                os.close(fd)
        except (OSError, Unavailable) as exc:
            log.warning(
                "DNS worker %d (pid %d) does not answer (%s); stopping it", index, rec.pid, exc
            )
            proc.kill()
            forget(spec.run_dir, index)
            continue
        if hello.get("pid") != rec.pid or hello.get("token") != rec.token:
            # Someone else answers on the socket: not the process we verified; leave it be.
            log.warning(
                "DNS worker %d: the control socket is not pid %d's; starting anew", index, rec.pid
            )
            proc.detach()
            forget(spec.run_dir, index)
            continue
        why = ""
        if hello.get("build") != spec.build:
            why = f"it runs DNS code build {hello.get('build')}, this daemon {spec.build}"
        elif rec.settings != spec.settings():
            why = f"it was started with {rec.settings}, now {spec.settings()}"
        elif index >= spec.workers:
            why = f"only {spec.workers} workers are configured"
        out.append(Found(proc, hello, not why, why))
    return out


def retiring_path(run_dir: Path, index: int) -> Path:
    """Where a replaced worker's record waits while it hands over (``retiring-<i>.json``)."""
    return run_dir / f"retiring-{index}.json"


def set_aside(run_dir: Path, index: int) -> None:
    """Move worker ``index``'s record aside before a replacement's record is written."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(record_path(run_dir, index), retiring_path(run_dir, index))
