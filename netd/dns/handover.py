"""Finding, verifying and stopping DNS workers that outlived the daemon that started them.

The DNS workers are started detached (their own session, not the daemon's children in any
sense that matters to a signal), so they keep answering while the daemon stops, restarts or is
upgraded. Each worker ``i`` has, in the manager's run directory (``<state_dir>/dns``, mode
0700, root's):

- ``worker-<i>.sock``: a listening SOCK_SEQPACKET Unix socket, bound by the daemon and handed
  to the worker, which accepts its control connections on it (one at a time; the worker checks
  the peer's uid with SO_PEERCRED);
- ``worker-<i>.json``: who it is (:class:`WorkerRecord`): pid, the process's start time (so a
  reused pid is never mistaken for it), uid, a random token the worker was given at start and
  repeats in every ``hello``, the build of the DNS code it runs and the settings it was
  started with.

A new daemon adopts a worker only when the record, /proc/<pid> (start time, uid, command line),
the control socket's SO_PEERCRED pid and the ``hello`` token all agree; it signals only a
process verified that way, through a pidfd (so the pid cannot be recycled between check and
signal). This module does the file and /proc work and nothing else: no DNS, no sockets to
serve.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KernelError

# Version of the control protocol's adoption part (hello, export, retire, records+replace).
# Bump it when a message changes meaning: workers of another protocol are replaced, not adopted.
PROTOCOL = 1
WORKER_MODULE = "netd.dns.worker"


@dataclass(frozen=True)
class WorkerRecord:
    """What the daemon wrote about a worker it started (``worker-<i>.json``)."""

    index: int
    pid: int
    start_time: int  # /proc/<pid>/stat field 22, clock ticks after boot
    uid: int
    token: str
    build: str
    settings: dict[str, Any] = field(default_factory=dict)


def build_id() -> str:
    """A digest of the DNS code (every ``netd/dns/*.py``) and the protocol version.

    A worker reports the build it was started with; after an upgrade the daemon's differs and
    the worker is replaced rather than adopted.
    """
    digest = hashlib.sha256(f"protocol {PROTOCOL}\n".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def record_path(run_dir: Path, index: int) -> Path:
    """``<run_dir>/worker-<index>.json``."""
    return run_dir / f"worker-{index}.json"


def control_path(run_dir: Path, index: int) -> Path:
    """``<run_dir>/worker-<index>.sock``, the worker's listening control socket."""
    return run_dir / f"worker-{index}.sock"


def ensure_run_dir(run_dir: Path) -> None:
    """Create the run directory, mode 0700 (only its owner may reach the control sockets)."""
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
    except OSError as exc:
        raise KernelError(f'creating the DNS run directory "{run_dir}": {exc.strerror}') from exc


def write_record(run_dir: Path, record: WorkerRecord) -> None:
    """Write a worker's record atomically (rename over the old one)."""
    path = record_path(run_dir, record.index)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(record), sort_keys=True) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_record(path: Path) -> WorkerRecord | None:
    """The record in ``path``, or None if it is missing or malformed."""
    try:
        data = json.loads(path.read_text())
        return WorkerRecord(
            index=int(data["index"]),
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            uid=int(data["uid"]),
            token=str(data["token"]),
            build=str(data["build"]),
            settings=dict(data.get("settings", {})),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_records(run_dir: Path, prefix: str = "worker") -> dict[int, WorkerRecord]:
    """Every readable ``<prefix>-<i>.json`` by index (malformed ones are skipped).

    ``prefix`` "retiring": workers that were being replaced when a daemon stopped.
    """
    out: dict[int, WorkerRecord] = {}
    if not run_dir.is_dir():
        return out
    for path in run_dir.glob(f"{prefix}-*.json"):
        rec = read_record(path)
        if rec is not None and path.name == f"{prefix}-{rec.index}.json":
            out[rec.index] = rec
    return out


def forget(run_dir: Path, index: int) -> None:
    """Remove a worker's record and control socket path."""
    for path in (record_path(run_dir, index), control_path(run_dir, index)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if there is no pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return int(text.rsplit(")", 1)[1].split()[19])


def _uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])  # the real uid
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def mismatch(record: WorkerRecord) -> str | None:
    """Why /proc/<pid> is not the worker ``record`` describes, or None if it is.

    Checked: the process exists, started when the record says (not a reused pid), runs as the
    recorded uid, and its command line is ``python -m netd.dns.worker``.
    """
    started = start_time(record.pid)
    if started is None:
        return f"pid {record.pid} is gone"
    if started != record.start_time:
        return f"pid {record.pid} started at {started}, not {record.start_time} (reused pid)"
    uid = _uid(record.pid)
    if uid != record.uid:
        return f"pid {record.pid} runs as uid {uid}, not {record.uid}"
    argv = _cmdline(record.pid)
    if WORKER_MODULE not in argv[1:4]:
        return f"pid {record.pid} runs {' '.join(argv[:4])!r}, not {WORKER_MODULE}"
    return None


class VerifiedProcess:
    """A worker process pinned by a pidfd after it was verified against its record.

    Signals go through the pidfd, so they reach that process or nobody. ``open`` returns None
    when the process is gone or is not the recorded worker.
    """

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd

    @classmethod
    def open(cls, record: WorkerRecord) -> tuple[VerifiedProcess | None, str | None]:
        """(process, None) if ``record`` describes a live worker, else (None, the reason)."""
        try:
            pidfd = os.pidfd_open(record.pid)
        except ProcessLookupError:
            return None, f"pid {record.pid} is gone"
        except OSError as exc:
            return None, f"opening pid {record.pid}: {exc.strerror}"
        reason = mismatch(record)
        # The checks read /proc/<pid>; they were about the pinned process only if it is still
        # alive now (a pid is recycled only after its process has exited).
        if reason is None and _exited(pidfd):
            reason = f"pid {record.pid} exited"
        if reason is not None:
            os.close(pidfd)
            return None, reason
        return cls(record.pid, pidfd), None

    def alive(self) -> bool:
        """True until the process has exited."""
        return self.pidfd >= 0 and not _exited(self.pidfd)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this process (nothing if it has exited)."""
        if self.pidfd < 0:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the exit; True if it exited."""
        if self.pidfd < 0:
            return True
        return bool(select.select([self.pidfd], [], [], timeout)[0])

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns when the process is gone."""
        self.signal(signal.SIGTERM)
        if not self.wait(timeout):
            self.signal(signal.SIGKILL)
            self.wait(5.0)
        self.close()

    def close(self) -> None:
        """Release the pidfd."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _exited(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


def stop_workers(
    run_dir: Path, timeout: float = 2.0, prefixes: tuple[str, ...] = ("worker", "retiring")
) -> list[str]:
    """Stop every recorded worker that verifies, remove the records; one line per worker.

    For ``netd dns stop`` and test teardown: a process that does not match its record is
    left alone (and reported), only its stale record is removed.
    """
    report = []
    for prefix in prefixes:
        for index, rec in sorted(read_records(run_dir, prefix).items()):
            name = f"{prefix} {index}" if prefix == "retiring" else f"worker {index}"
            proc, reason = VerifiedProcess.open(rec)
            if proc is None:
                report.append(f"{name}: not running ({reason})")
            else:
                started = time.monotonic()
                proc.stop(timeout)
                report.append(
                    f"{name}: stopped pid {rec.pid} in {time.monotonic() - started:.2f} s"
                )
            if prefix == "worker":
                forget(run_dir, index)
            else:
                with contextlib.suppress(FileNotFoundError):
                    (run_dir / f"retiring-{index}.json").unlink()
    return report


def worker_capabilities(pid: int) -> dict[str, str]:
    """Uid and capability lines of a process from /proc (for checks and `netd dns status`)."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in (
                "Uid",
                "Gid",
                "Groups",
                "CapInh",
                "CapPrm",
                "CapEff",
                "CapBnd",
                "CapAmb",
                "NoNewPrivs",
            ):
                out[key] = val.strip()
    return out
