"""DNS inside a container's namespace at 127.0.0.11, for drivers whose containers cannot reach
the host (macvlan, ipvlan: a kernel rule keeps a lower device and its macvlans apart).

Docker's answer, reused: each container gets a resolver address of its own on its loopback,
127.0.0.11:53 (libnetwork ``resolver.go``). The daemon makes a UDP and a TCP socket *inside*
the endpoint's namespace (:func:`netd.kernel.netns.socket_in`: the one thread that enters
namespaces makes the socket and comes home), binds them there, and hands them to the
unprivileged worker like every other listening socket (:mod:`netd.dns.manager`). A socket stays
in the namespace it was made in, so the worker, in the host, serves queries that never leave
the container.

Queries on such a socket come from 127.0.0.1, which says nothing about who asks, so a socket
carries the address of the endpoint it was made for (``client``): the worker answers as if
that address had asked (its container's networks, upstreams and fair share). The socket keys
(:func:`socket_keys`) name the endpoint, so a daemon that adopts a running worker gets the
sockets back with their client and knows which endpoint each belongs to.

Nothing here decides *when*: the service's DNS publication
(:class:`netd.core.dns_publish.DnsPublisher`) calls :meth:`EndpointSockets.sync_network_sockets`
with a network's resolvable endpoints each time it publishes that network (attach, detach,
reap, removal) and :meth:`EndpointSockets.sync_endpoint_sockets` with all of them at start-up,
for networks whose driver places DNS in the namespace (``Capabilities.dns == "netns"``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import zlib

from ..errors import NetdError
from ..kernel.netns import open_netns, socket_in
from ..model import Endpoint, Network
from .held import HeldSocket, WorkerSlot
from .listen import bind_dns_socket

log = logging.getLogger(__name__)

NETNS_DNS_ADDRESS = "127.0.0.11"  # Docker's embedded resolver address
NETNS_KEY_PREFIX = "netns:"


def socket_keys(network: Network, endpoint: Endpoint) -> tuple[str, str]:
    """(UDP key, TCP key) of the sockets serving ``endpoint``'s namespace."""
    base = f"{NETNS_KEY_PREFIX}{network.id[:12]}:{endpoint.container_id}/{endpoint.ifname}"
    return f"{base}:udp", f"{base}:tcp"


def client_address(endpoint: Endpoint) -> str:
    """The endpoint address queries are answered for (its first IPv4, else first); "" if none."""
    ordered = sorted(endpoint.addresses, key=lambda a: a.version)
    return str(ordered[0].ip) if ordered else ""


def bind_in_netns(endpoint: Endpoint, tcp: bool, port: int) -> socket.socket:
    """A UDP socket bound to, or TCP socket listening on, 127.0.0.11:``port`` in the endpoint's
    namespace; KernelError/InvalidInput saying which namespace."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    fd = open_netns(endpoint.netns, endpoint.netns_inode)
    try:
        sock = socket_in(fd, socket.AF_INET, kind)
    finally:
        os.close(fd)
    where = f" in {endpoint.netns}"
    return bind_dns_socket(NETNS_DNS_ADDRESS, port, kind, sock=sock, where=where)


def bind_pair(endpoint: Endpoint, port: int) -> tuple[socket.socket, socket.socket]:
    """(UDP, TCP) sockets for the endpoint; neither is left open if the second fails."""
    udp = bind_in_netns(endpoint, False, port)
    try:
        tcp = bind_in_netns(endpoint, True, port)
    except NetdError:
        udp.close()
        raise
    return udp, tcp


class EndpointSockets:
    """The endpoint-socket part of :class:`netd.dns.manager.DnsManager` (a mixin: it uses the
    manager's lock, held sockets and workers)."""

    _lock: threading.RLock
    _socks: dict[str, HeldSocket]
    _workers: list[WorkerSlot]
    port: int

    def _drop_socket(self, key: str) -> None:
        raise NotImplementedError  # DnsManager's

    def _send_later(self, owner: int, key: str) -> None:
        raise NotImplementedError  # DnsManager's

    def attach_endpoint_socket(self, network: Network, endpoint: Endpoint) -> None:
        """Serve ``endpoint``'s container at 127.0.0.11:53 inside its namespace (idempotent).

        Call after the endpoint is plumbed (its namespace has ``lo`` up) and published with
        :meth:`update_network`; KernelError/InvalidInput if the sockets cannot be bound (then
        none is left). Nothing for a network without DNS or an endpoint without addresses.
        """
        client = client_address(endpoint)
        if not network.dns_enabled or not client or not endpoint.netns:
            return
        keys = socket_keys(network, endpoint)
        with self._lock:
            if all(k in self._socks for k in keys):
                return
            for key in keys:
                if key in self._socks:
                    self._drop_socket(key)
            owner = zlib.crc32(keys[0].encode()) % len(self._workers)
            udp, tcp = bind_pair(endpoint, self.port)
            for key, sock in zip(keys, (udp, tcp), strict=True):
                self._socks[key] = HeldSocket(sock, False, owner, client)
                self._send_later(owner, key)

    def detach_endpoint_socket(self, network: Network, endpoint: Endpoint) -> None:
        """Stop serving ``endpoint``'s namespace and close its sockets (no-op if none).

        Call when the endpoint is detached, before or after its interface goes: a socket holds
        a reference to its namespace, so one left open would keep a dead container's namespace
        alive.
        """
        with self._lock:
            for key in socket_keys(network, endpoint):
                if key in self._socks:
                    self._drop_socket(key)

    def sync_network_sockets(self, network: Network, endpoints: list[Endpoint]) -> list[str]:
        """Serve exactly these endpoints of ``network`` in their namespaces: the others' sockets
        close, missing ones are bound (after each change of the network; idempotent, a dict
        lookup per endpoint when nothing changed). Returns the failures, one line each."""
        prefix = f"{NETNS_KEY_PREFIX}{network.id[:12]}:"
        wanted = {k for ep in endpoints for k in socket_keys(network, ep)}
        with self._lock:
            stale = [k for k, s in self._socks.items()
                     if s.client and k.startswith(prefix) and k not in wanted]  # fmt: skip
            for key in stale:
                self._drop_socket(key)
        return self._attach_all([(network, ep) for ep in endpoints])

    def _attach_all(self, endpoints: list[tuple[Network, Endpoint]]) -> list[str]:
        failures = []
        for net, ep in endpoints:
            try:
                self.attach_endpoint_socket(net, ep)
            except NetdError as exc:
                failures.append(exc.message)
                log.error("DNS for %s/%s in %s: %s", ep.container_id, ep.ifname, ep.netns, exc)
        return failures

    def sync_endpoint_sockets(self, endpoints: list[tuple[Network, Endpoint]]) -> list[str]:
        """Serve exactly these endpoints' namespaces (start-up, reconcile): sockets of others
        (adopted from a worker, endpoints gone meanwhile) close, missing ones are bound.

        Returns the failures (one line each); the others are served regardless.
        """
        wanted = {k for net, ep in endpoints for k in socket_keys(net, ep)}
        with self._lock:
            for key in [k for k, s in self._socks.items() if s.client and k not in wanted]:
                self._drop_socket(key)
        return self._attach_all(endpoints)
