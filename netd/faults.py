"""Named fault-injection points, switched on by the environment.

Every multi-step operation marks its steps with ``faults.point("bridge.veth_created")``. In
production ``NETD_FAULTS`` is unset and a point costs one dict lookup. Tests set
``NETD_FAULTS="bridge.veth_created=raise"`` (raise :class:`InjectedFault`) or ``...=kill``
(SIGKILL the daemon at that instant, for crash-safety tests) or ``...=eio`` (raise
``OSError(EIO)``, as a failing disk does), optionally ``=raise@3`` to trigger on the third time
the point is reached, or ``=eio@*`` on every time. Several points are separated by commas.

The points let tests prove that rollback and recovery work; they do not change behaviour when
unset, so no code path exists only for tests.
"""

from __future__ import annotations

import errno
import os
import signal
import threading

from .errors import NetdError


class InjectedFault(NetdError):
    """Raised at a fault point switched on by NETD_FAULTS."""

    code = "injected_fault"


def _parse(spec: str) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        action, _, nth = (action or "raise").partition("@")
        out[name] = (action, 0 if nth == "*" else int(nth or 1))  # 0: every time
    return out


_armed = _parse(os.environ.get("NETD_FAULTS", ""))
_hits: dict[str, int] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    """Trigger the fault armed for ``name``, if any (see module docstring)."""
    if not _armed:
        return
    armed = _armed.get(name)
    if armed is None:
        return
    action, nth = armed
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if nth and _hits[name] != nth:
            return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "eio":
        raise OSError(errno.EIO, f"{os.strerror(errno.EIO)} (injected fault at {name})")
    raise InjectedFault(f"injected fault at {name}")


def arm(spec: str) -> None:
    """Replace the armed faults (for in-process tests); ``""`` disarms."""
    global _armed
    with _lock:
        _armed = _parse(spec)
        _hits.clear()
