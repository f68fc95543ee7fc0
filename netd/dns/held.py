"""What the DNS manager holds per socket and per worker slot (plain records, no I/O).

Split from :mod:`netd.dns.manager` so that module stays about the manager's behaviour.
"""

from __future__ import annotations

import socket

from ..model import Endpoint
from .workerproc import WorkerProc


class HeldSocket:
    """A socket the daemon holds for a worker: which worker serves it, and in which view."""

    __slots__ = ("client", "host", "owner", "sock")

    def __init__(self, sock: socket.socket, host: bool, owner: int, client: str = "") -> None:
        self.sock = sock
        self.host = host  # the host listener: sees every network
        self.owner = owner  # index of the worker that serves it
        self.client = client  # at 127.0.0.11 in this endpoint address's namespace (netns_listen)


class WorkerSlot:
    """One worker slot: its process, and what it still needs."""

    __slots__ = ("full", "index", "old", "proc", "restarts")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: WorkerProc | None = None
        self.restarts: list[float] = []
        self.full = False  # adopted: the next records push replaces whatever it serves
        self.old: WorkerProc | None = None  # replaced: serves until this slot's new worker can

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()


def dns_fields(ep: Endpoint) -> tuple[object, ...]:
    """What of an endpoint its DNS records depend on (state changes do not count)."""
    return (
        ep.name, ep.hostname, ep.aliases, ep.addresses, ep.port_mappings, ep.dns_servers,
    )  # fmt: skip
