"""The audit trail: one JSON line per mutating or denied request, appended off the request path.

A line (keys always present; ``null`` when unknown)::

    {"time": "2025-01-31T12:00:00.123Z", "caller": {"uid": 1000, "gid": 1000, "pid": 4242,
     "cmdline": "netd network create web"}, "action": "POST /v1/networks",
     "target": {"network": "web"}, "parameters": {"name": "web"}, "outcome": "ok",
     "status": 201, "error": null, "reason": "uid 1000 is in group 'netd' (gid 998)",
     "duration_ms": 12.5}

``outcome`` is ``ok`` (status < 400), ``error`` (the request was allowed and failed) or
``denied`` (policy or hook said no; ``reason`` says why). ``parameters`` is the request body,
replaced by ``{"truncated": true, "bytes": N, "prefix": "..."}`` past ``max_param_bytes``.

:class:`AuditLog` never blocks the caller: :meth:`AuditLog.write` puts the record on a bounded
queue that one writer thread drains; when the queue is full the record is dropped and counted,
a warning is logged, and the writer later appends an ``{"event": "audit_dropped", "count": N}``
line so the gap is visible in the trail itself. Lines are written with one ``write(2)`` each on
an ``O_APPEND`` file (mode 0600) and rotated by size: ``audit.log`` → ``audit.log.1`` → ...
→ ``audit.log.<backups>``. Each line reaches the kernel at once (a daemon crash loses nothing
written); it is not fsync'ed, so a machine crash may lose the last lines.

It does not decide anything and does not read requests (``middleware`` builds the records).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("netd.security.audit")
Outcome = Literal["ok", "error", "denied"]
_STOP = object()


class AuditConfig(BaseModel):
    """The ``[audit]`` table of the daemon config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    path: Path | None = Field(default=None, description="default <state_dir>/audit.log")
    max_bytes: int = Field(default=10 << 20, ge=4096, description="rotate past this size")
    backups: int = Field(default=5, ge=0, le=100, description="rotated files kept")
    queue_size: int = Field(default=4096, ge=16, description="records waiting for the writer")
    max_param_bytes: int = Field(default=4096, ge=256, description="request body kept per line")


def rfc3339(ts: float | None = None) -> str:
    """``ts`` (default now) as an RFC 3339 UTC timestamp with milliseconds."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cap_parameters(body: Any, max_bytes: int) -> Any:
    """``body`` as is when its JSON fits ``max_bytes``, else a truncation marker with a prefix."""
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    if len(text.encode()) <= max_bytes:
        return body
    return {"truncated": True, "bytes": len(text.encode()), "prefix": text[: max_bytes // 2]}


def make_record(
    *,
    caller: Mapping[str, Any] | None,
    action: str,
    target: Mapping[str, Any],
    parameters: Any,
    outcome: Outcome,
    status: int,
    error: str | None = None,
    reason: str | None = None,
    duration_ms: float | None = None,
    ts: float | None = None,
    max_param_bytes: int = 4096,
) -> dict[str, Any]:
    """One audit line as a dict (see the module docstring for the format)."""
    return {
        "time": rfc3339(ts),
        "caller": dict(caller) if caller is not None else None,
        "action": action,
        "target": dict(target),
        "parameters": cap_parameters(parameters, max_param_bytes),
        "outcome": outcome,
        "status": status,
        "error": error,
        "reason": reason,
        "duration_ms": None if duration_ms is None else round(duration_ms, 3),
    }


class AuditLog:
    """Appends records to ``path`` from a writer thread; never blocks :meth:`write`."""

    def __init__(
        self, path: Path, max_bytes: int = 10 << 20, backups: int = 5, queue_size: int = 4096
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._dropped = 0  # total since start
        self._unreported = 0  # dropped and not yet written as an audit_dropped line
        self._last_warning = 0.0
        self._fd: int | None = None
        self._size = 0
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: AuditConfig, state_dir: Path) -> AuditLog:
        """The log the ``[audit]`` config describes (path default ``<state_dir>/audit.log``)."""
        return cls(
            config.path or state_dir / "audit.log",
            config.max_bytes,
            config.backups,
            config.queue_size,
        )

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full."""
        return self._dropped

    def start(self) -> AuditLog:
        """Create the directory and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread = threading.Thread(target=self._run, name="netd-audit", daemon=True)
        self._thread.start()
        return self

    def write(self, record: Mapping[str, Any]) -> bool:
        """Queue one record; False (and counted) if the queue is full. Never blocks."""
        try:
            self._queue.put_nowait(dict(record))
            return True
        except queue.Full:
            with self._lock:
                self._dropped += 1
                self._unreported += 1
                now = time.monotonic()
                warn = now - self._last_warning >= 10
                if warn:
                    self._last_warning = now
            if warn:
                log.warning(
                    "audit queue full (%d records): %d audit lines dropped so far",
                    self._queue.maxsize,
                    self._dropped,
                )
            return False

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer (gives up after ``timeout`` seconds)."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("audit writer did not finish within %g s; lines may be lost", timeout)
        self._thread = None

    # --- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            self._emit(item)
            with self._lock:
                gap, self._unreported = self._unreported, 0
            if gap:
                self._emit({"time": rfc3339(), "event": "audit_dropped", "count": gap})
        self._report_and_close()

    def _report_and_close(self) -> None:
        with self._lock:
            gap, self._unreported = self._unreported, 0
        if gap:
            self._emit({"time": rfc3339(), "event": "audit_dropped", "count": gap})
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _emit(self, record: object) -> None:
        line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
        try:
            if self._fd is None:
                self._open()
            elif self._size > 0 and self._size + len(line) > self.max_bytes:
                self._rotate()
            assert self._fd is not None
            os.write(self._fd, line)
            self._size += len(line)
        except OSError as exc:
            # The trail must not take the daemon down; the loss is counted and reported.
            with self._lock:
                self._dropped += 1
            log.error("writing audit log %s: %s", self.path, exc.strerror or exc)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()
