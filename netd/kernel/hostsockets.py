"""Host-side netlink sockets kept per calling thread, shared by the drivers that plumb links.

pyroute2's sync objects are not thread-safe and opening one costs about 1 ms, so a driver keeps
one raw rtnetlink client (:class:`~netd.kernel.rtnl.Rtnl`, the endpoint hot path) and one
``IPRoute`` per worker thread, and closes every one of them when the daemon stops. A socket
that may hold a half-read reply (an unexpected exception while in use) is dropped, never reused.

:func:`refuse_initial_netns` is the drivers' one guard against configuring the machine's own
namespace when the daemon was not told to manage it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import ConfigError, NetdError
from .netns import is_initial_netns
from .rtnl import Rtnl, RtnlError, host_socket


def refuse_initial_netns(allow: bool, operation: str) -> None:
    """ConfigError unless ``allow`` or this thread is outside the machine's initial namespace."""
    if not allow and is_initial_netns():
        raise ConfigError(
            f"{operation}: refusing to configure the machine's initial network namespace "
            "(the daemon was not configured to manage the host namespace)"
        )


class HostSockets:
    """This thread's host-side netlink clients, created on first use, all closed by close()."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def _keep(self, sock: Any) -> None:
        with self._lock:
            self._opened.append(sock)

    def rtnl(self) -> Rtnl:
        """This thread's raw rtnetlink client (requests wait for their acks)."""
        rtnl: Rtnl | None = getattr(self._local, "rtnl", None)
        if rtnl is None:
            rtnl = Rtnl(host_socket())
            self._local.rtnl = rtnl
            self._keep(rtnl)
        return rtnl

    @contextmanager
    def iproute(self) -> Iterator[IPRoute]:
        """This thread's IPRoute; dropped if something other than a refused request (a
        netlink or netd error, which leaves it in sync) escapes while it is in use."""
        ipr: IPRoute | None = getattr(self._local, "ipr", None)
        if ipr is None:
            ipr = IPRoute(groups=0)
            self._local.ipr = ipr
            self._keep(ipr)
        try:
            yield ipr
        except (NetdError, NetlinkError, RtnlError):
            raise
        except BaseException:
            self._local.ipr = None
            with self._lock:
                if ipr in self._opened:
                    self._opened.remove(ipr)
            ipr.close()
            raise

    def close(self) -> None:
        """Close every socket opened here, from any thread."""
        with self._lock:
            opened, self._opened = self._opened, []
        for sock in opened:
            sock.close()
        self._local = threading.local()
