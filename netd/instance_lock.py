"""The single-instance lock on a state directory, held by whoever may change it.

``netd daemon`` holds it while it runs; ``netd recover`` and ``netd dns stop`` take it so they
never run beside a daemon. Its own module so that those commands need not import the daemon
(and with it the web framework).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import ConfigError


class InstanceLock:
    """An flock on ``<state_dir>/netd.lock`` holding our pid; names the holder when taken."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "netd.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError naming the pid that holds it (or why the file
        cannot be opened: a read-only or full state directory)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"opening the instance lock {describe_os_error(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"another netd (pid {holder}) holds {self.path}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def describe_os_error(exc: OSError) -> str:
    """``<path>: <strerror> (<ERRNO>)``, e.g. ``/var/lib/netd/netd.lock: Read-only file system
    (EROFS)``: the one line an operator needs, with the errno's name to search for."""
    name = errno.errorcode.get(exc.errno or 0, f"errno {exc.errno}")
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what} ({name})" if exc.filename else f"{what} ({name})"
