"""netd.dns: the embedded DNS server (records, answering, forwarding, unprivileged worker).

The daemon uses :class:`DnsManager` (binds sockets, runs the worker, pushes records) and
:func:`render_resolv_conf`; everything else is internal.
"""

from .manager import DnsManager
from .resolvconf import render_resolv_conf

__all__ = ["DnsManager", "render_resolv_conf"]
