"""route_localnet on netd bridges: lets the host's 127.0.0.1 reach published ports (IPv4).

A connection from the host to 127.0.0.1:<published port> is DNATed to a container in the
output hook; the kernel then refuses to route a packet with a loopback source out of a
non-loopback device unless ``net.ipv4.conf.<dev>.route_localnet`` is 1. We set it on netd's
bridges only (Docker sets it the same way), never on ``all``/``default``, and the postrouting
masquerade of 127.0.0.0/8 makes sure no loopback source ever leaves the bridge.

This module writes the current network namespace's /proc/sys; it does nothing else.
"""

from __future__ import annotations

import logging

from ..errors import FirewallError
from ..names import check_ifname

log = logging.getLogger(__name__)


def enable_route_localnet(bridge: str) -> bool:
    """Set route_localnet=1 on ``bridge``; False (logged) if the bridge does not exist yet."""
    path = f"/proc/sys/net/ipv4/conf/{check_ifname(bridge, 'bridge')}/route_localnet"
    try:
        with open(path, "w") as f:
            f.write("1")
    except FileNotFoundError:
        log.warning("bridge %s not found: route_localnet not set, loopback publishing off", bridge)
        return False
    except OSError as exc:
        raise FirewallError(f'enabling route_localnet on bridge "{bridge}": {exc}') from exc
    return True
