"""The DNS worker's log channel: its log lines go through the daemon, never to a shared file.

The worker is unprivileged and may one day run hostile code; it must not hold a descriptor of
the daemon's log (stderr, the journal stream, a root-owned file): its stderr is /dev/null. Its
log records travel instead as one JSON object per line over a pipe whose read end the current
daemon holds, and the daemon logs them under ``netd.dns.worker`` in its own format
(text/JSON/logfmt, :mod:`netd.logs`), after checking them:

- worker side, :class:`ChannelHandler`: a logging handler writing each record with one
  non-blocking ``write`` (at most :data:`MAX_LINE` bytes, below PIPE_BUF, so lines from several
  threads never interleave). Without a daemon (the pipe's reader is gone: the daemon stopped,
  restarted or crashed; detached workers outlive it) lines wait in a bounded buffer, oldest
  dropped and counted, and the next daemon's pipe (control message ``log``) gets them, led by
  a line saying how many were dropped.
- daemon side, :class:`LogPump`: one thread reading every worker's pipe. What a worker writes
  is data, not log lines: the level is clamped to a known one, control characters are escaped
  (no forged lines in the text format), lines are cut at :data:`MAX_LINE`, and each worker may
  log :data:`PUMP_RATE` lines per second (the rest are counted and reported), so a compromised
  worker can neither forge nor flood the daemon's log.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import select
import threading
import time
from typing import Any

from .limits import TokenBucket

MAX_LINE = 4000  # bytes; PIPE_BUF (4096) makes a write of this size atomic
BUFFERED = 512  # lines kept while no daemon reads
PUMP_RATE = 50.0  # lines per second and worker the daemon logs (bursts of 4x)
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
_ESCAPES = {c: f"\\x{c:02x}" for c in range(32) if c != 9} | {0x7F: "\\x7f"}
_ESCAPES[10] = "\\n"

wlog = logging.getLogger("netd.dns.worker")


def encode(record: logging.LogRecord) -> bytes:
    """One record as a JSON line of at most :data:`MAX_LINE` bytes."""
    msg = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        msg += "\n" + logging.Formatter().formatException(record.exc_info)
    doc = {"level": record.levelno, "logger": record.name, "msg": msg}
    line = json.dumps(doc, ensure_ascii=True).encode() + b"\n"
    if len(line) > MAX_LINE:
        cut = msg[: MAX_LINE // 8]  # ASCII-escaped JSON can be 6x longer than the text
        doc["msg"] = cut + f" ... ({len(msg)} characters)"
        line = json.dumps(doc, ensure_ascii=True).encode()[: MAX_LINE - 1] + b"\n"
    return line


class ChannelHandler(logging.Handler):
    """Worker side: writes records to the daemon's pipe, buffering while there is none."""

    def __init__(self, fd: int | None = None, capacity: int = BUFFERED) -> None:
        super().__init__()
        self.fd: int | None = None
        self.buffer: collections.deque[bytes] = collections.deque()
        self.capacity = capacity
        self.dropped = 0  # lines lost while no daemon read (reported to the next one)
        self.dropped_total = 0
        if fd is not None:
            self.attach(fd)

    def attach(self, fd: int) -> None:
        """Use ``fd`` (a pipe's write end from the daemon) from now on; send what waited."""
        self.acquire()
        try:
            old, self.fd = self.fd, fd
            if old is not None and old != fd:
                with contextlib.suppress(OSError):
                    os.close(old)
            os.set_blocking(fd, False)
            if self.dropped:
                note = logging.makeLogRecord(
                    {
                        "name": wlog.name,
                        "levelno": logging.WARNING,
                        "levelname": "WARNING",
                        "msg": "%d log lines were dropped while no daemon was reading",
                        "args": (self.dropped,),
                    }
                )
                self.buffer.appendleft(encode(note))
                self.dropped = 0
            self._flush_buffer()
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (logging.Handler.handle).
        try:
            line = encode(record)
        except Exception:
            self.handleError(record)
            return
        if self.buffer:
            self._flush_buffer()
        if self.buffer or not self._write(line):
            self._keep(line)

    def flush(self) -> None:
        """Send the lines waiting for room in the pipe (or for a daemon)."""
        self.acquire()
        try:
            self._flush_buffer()
        finally:
            self.release()

    def handleError(self, record: logging.LogRecord) -> None:
        # Never print to stderr (it is /dev/null anyway): count the line as lost.
        self.dropped += 1
        self.dropped_total += 1

    def _keep(self, line: bytes) -> None:
        if len(self.buffer) >= self.capacity:
            self.buffer.popleft()
            self.dropped += 1
            self.dropped_total += 1
        self.buffer.append(line)

    def _flush_buffer(self) -> None:
        while self.buffer and self._write(self.buffer[0]):
            self.buffer.popleft()

    def _write(self, line: bytes) -> bool:
        """Write one whole line; False if it must wait (no reader, pipe full)."""
        if self.fd is None:
            return False
        try:
            os.write(self.fd, line)
            return True
        except BlockingIOError:
            return False
        except OSError:  # EPIPE: the daemon is gone; the next one sends a new pipe
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
            return False


def _level(value: int) -> int:
    """The highest standard level not above ``value`` (DEBUG below that)."""
    return max((lv for lv in _LEVELS if lv <= value), default=logging.DEBUG)


def _clean(text: str) -> str:
    return text.translate(_ESCAPES)


class _Source:
    __slots__ = ("buf", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self.buf = b""


class LogPump:
    """Daemon side: one thread logging what every worker writes to its pipe."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or wlog
        self._lock = threading.Lock()
        self._sources: dict[int, _Source] = {}  # read end -> worker
        self._bucket = TokenBucket(PUMP_RATE, PUMP_RATE * 4)
        self._suppressed: dict[str, int] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread: threading.Thread | None = None
        self._stop = False

    def open(self) -> tuple[int, int]:
        """A new pipe (read end, write end), close-on-exec; :meth:`watch` the read end."""
        return os.pipe2(os.O_CLOEXEC)

    def watch(self, read_fd: int, pid: int) -> None:
        """Log what worker ``pid`` writes to ``read_fd`` (closed at EOF or :meth:`stop`)."""
        os.set_blocking(read_fd, False)
        with self._lock:
            self._sources[read_fd] = _Source(str(pid))
            if self._thread is None:
                self._stop = False
                self._thread = threading.Thread(target=self._run, name="netd-dns-log", daemon=True)
                self._thread.start()
        self._wake()

    def stop(self) -> None:
        """Read what is pending, then close every pipe (workers buffer until the next daemon)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop = True
        self._wake()
        if thread is not None:
            thread.join(timeout=5)
        with self._lock:
            for fd in list(self._sources):
                self._drain(fd)
                self._close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stop:
                    return
                fds = list(self._sources)
            try:
                ready, _, _ = select.select([self._wake_r, *fds], [], [], 1.0)
            except (OSError, ValueError):
                ready = []  # a descriptor closed meanwhile: take the list again
            for fd in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    if fd in self._sources and not self._drain(fd):
                        self._close(fd)
            self._report_suppressed()

    def _drain(self, fd: int) -> bool:
        """Read what is there and log whole lines; False at EOF (lock held)."""
        src = self._sources[fd]
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                if src.buf:
                    self._emit(src, src.buf)
                return False
            src.buf += data
            *lines, src.buf = src.buf.split(b"\n")
            for line in lines:
                self._emit(src, line)
            if len(src.buf) > MAX_LINE:  # no newline within a line's length: not ours
                self._emit(src, src.buf[:MAX_LINE])
                src.buf = b""

    def _close(self, fd: int) -> None:
        self._sources.pop(fd, None)
        with contextlib.suppress(OSError):
            os.close(fd)

    def _emit(self, src: _Source, line: bytes) -> None:
        if not line.strip():
            return
        if not self._bucket.allow(src.label, time.monotonic()):
            self._suppressed[src.label] = self._suppressed.get(src.label, 0) + 1
            return
        level, msg, name = logging.WARNING, "", ""
        try:
            doc: Any = json.loads(line[: MAX_LINE * 2])
            level = _level(int(doc["level"]))
            msg = str(doc["msg"])
            name = str(doc.get("logger", ""))
        except (ValueError, TypeError, KeyError):
            msg = "unparsable log line: " + line.decode("ascii", "backslashreplace")
        if not self.log.isEnabledFor(level):
            return
        extra = {"dns_worker": int(src.label)} if src.label.isdigit() else {}
        where = f" ({_clean(name)})" if name and name != wlog.name else ""
        self.log.log(level, "DNS worker %s%s: %s", src.label, where, _clean(msg), extra=extra)

    def _report_suppressed(self) -> None:
        if not self._suppressed:
            return
        for label, n in self._suppressed.items():
            self.log.warning(
                "DNS worker %s: %d log lines not logged (over %d lines/s)", label, n, PUMP_RATE
            )
        self._suppressed.clear()
