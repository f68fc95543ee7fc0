"""Network sysctls of the daemon's own namespace, through /proc/sys.

Writes go to /proc/sys/net/..., which the kernel resolves against the writer's network
namespace, so a daemon running in a sandbox "host" namespace changes only that namespace.
:func:`ensure_sysctl` refuses to write in the machine's initial namespace unless the caller
passes ``allow_initial_netns=True`` (the production daemon does, by configuration; tests never).

It does not read or write sysctls of other namespaces and has no list of "needed" sysctls: the
drivers decide which ones they need.
"""

from __future__ import annotations

import logging
import os
import re

from ..errors import ConfigError, InvalidInput, KernelError
from ..names import check_ifname
from .netns import is_initial_netns

log = logging.getLogger(__name__)

_NAME = re.compile(r"net(\.[a-zA-Z0-9_-]+)+\Z")


def sysctl_path(name: str) -> str:
    """``/proc/sys/net/ipv4/ip_forward`` for ``net.ipv4.ip_forward``; only ``net.*`` names."""
    if not _NAME.match(name):
        raise InvalidInput("sysctl", name, "must be a net.* sysctl name of [a-zA-Z0-9_-] parts")
    return "/proc/sys/" + name.replace(".", "/")


def read_sysctl(name: str) -> str:
    """Current value of a net.* sysctl, stripped."""
    path = sysctl_path(name)
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError as exc:
        raise KernelError(f"reading sysctl {name}: {exc.strerror}") from exc


def ensure_sysctl(name: str, value: str, *, allow_initial_netns: bool = False) -> bool:
    """Set ``name`` to ``value`` in this process's namespace; True if it changed.

    Logs every change (what, old, new) so the audit trail shows host-wide side effects.
    """
    path = sysctl_path(name)
    current = read_sysctl(name)
    if current == value:
        return False
    if not allow_initial_netns and is_initial_netns():
        raise ConfigError(
            f"refusing to set sysctl {name}={value} in the machine's initial network namespace "
            "(the daemon must be configured to manage the host namespace)"
        )
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except OSError as exc:
        raise KernelError(f"setting sysctl {name}={value}: {exc.strerror}") from exc
    log.info("sysctl %s changed from %s to %s", name, current, value)
    return True


def disable_ipv6_on(ifname: str) -> None:
    """``net.ipv6.conf.<ifname>.disable_ipv6 = 1`` for a link netd created, in this namespace.

    For host-side veth ends: a bridge port needs no IPv6 of its own, and without it the kernel
    adds no fe80::/64 and ff00::/8 routes per port (route lists every link event walks) and
    sends no DAD, MLD or router solicitation from it. A kernel without IPv6 has no such file.
    """
    path = f"/proc/sys/net/ipv6/conf/{check_ifname(ifname)}/disable_ipv6"
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write("1")
    except FileNotFoundError:
        if os.path.isdir("/proc/sys/net/ipv6"):
            raise KernelError(f"disabling IPv6 on {ifname}: no such interface") from None
    except OSError as exc:
        raise KernelError(f"disabling IPv6 on {ifname}: {exc.strerror}") from exc
