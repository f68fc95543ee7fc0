"""The daemon's DNS listening sockets: parsing ``host_listen`` and binding port 53.

Binding needs CAP_NET_BIND_SERVICE, so it happens in the daemon (:mod:`netd.dns.manager`); the
sockets are then handed to the unprivileged workers. Nothing here serves or knows records.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from ..errors import ConfigError, KernelError

IP_FREEBIND = 15  # linux/in.h: bind before the address is configured (bridge set up later)
MAX_DEFAULT_WORKERS = 1


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[v6]:PORT``) as (address, port); ConfigError naming the text."""
    host, sep, port = text.rpartition(":")
    try:
        if not sep:
            raise ValueError("no port")
        addr = ipaddress.ip_address(host.strip("[]"))
        return str(addr), int(port)
    except ValueError as exc:
        raise ConfigError(f"invalid DNS host_listen {text!r}: expected ADDRESS:PORT") from exc


def default_workers() -> int:
    """Worker processes by default: one per CPU up to :data:`MAX_DEFAULT_WORKERS`."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def bind_dns_socket(
    addr: str,
    port: int,
    kind: int,
    reuseport: bool = False,
    sock: socket.socket | None = None,
    where: str = "",
) -> socket.socket:
    """A UDP socket bound to, or a TCP socket listening on, ``addr``:``port``.

    ``reuseport``: one of several UDP sockets on the same address (one per worker). ``sock``: a
    fresh socket of the right family and type made elsewhere (inside a container's namespace,
    :mod:`netd.dns.netns_listen`), which ``where`` names in errors; closed on failure.
    """
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = sock if sock is not None else socket.socket(fam, kind)
    try:
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError as exc:
        sock.close()
        proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
        raise KernelError(
            f"binding DNS {proto} socket to {addr} port {port}{where}: {exc}"
        ) from exc
    return sock
