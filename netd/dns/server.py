"""The DNS server's socket loops (asyncio): UDP receive loops and TCP connections.

Only moves bytes between sockets and :class:`~netd.dns.answer.Answerer` /
:class:`~netd.dns.forward.Forwarder`. UDP: one reader callback per socket drains it in a tight
``recvfrom``/``sendto`` loop (bounded per wake-up so no socket starves the others). TCP: several
messages per connection, each message (and the idle gap before it) must arrive within
:data:`IDLE`, connections are capped per client and in total, so clients that send partial
messages or hold connections cannot starve others (cf. CVE-2024-8418). Sockets are handed in
already bound (the worker cannot bind port 53 itself). No privileges and no records here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from .answer import Answerer, Forward
from .forward import Forwarder

log = logging.getLogger(__name__)

IDLE = 10.0  # seconds a TCP connection may sit idle or take to send one message
MAX_TCP = 512  # TCP connections in total
MAX_TCP_PER_CLIENT = 16
MAX_FORWARDS = 2048  # forwarded queries in flight (beyond: dropped, the client retries)
BURST = 256  # UDP datagrams handled per wake-up of one socket


class Server:
    """Serves the sockets it is given until they are removed."""

    def __init__(self, answerer: Answerer, forwarder: Forwarder) -> None:
        self.answerer = answerer
        self.forwarder = forwarder
        self._udp: dict[str, socket.socket] = {}
        self._tcp: dict[str, asyncio.AbstractServer] = {}
        self._tcp_total = 0
        self._tcp_per: dict[str, int] = {}
        self._forwards = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # --- sockets --------------------------------------------------------------------------

    async def add(self, key: str, sock: socket.socket, host: bool) -> None:
        """Start serving an already bound UDP socket or listening TCP socket."""
        await self.remove(key)
        sock.setblocking(False)
        if sock.type == socket.SOCK_DGRAM:
            self._udp[key] = sock
            asyncio.get_running_loop().add_reader(sock.fileno(), self._on_udp, sock, host)
        else:
            self._tcp[key] = await asyncio.start_server(
                lambda r, w: self._on_tcp(r, w, host), sock=sock
            )

    async def remove(self, key: str) -> None:
        """Stop serving and close a socket (no-op if unknown)."""
        sock = self._udp.pop(key, None)
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        srv = self._tcp.pop(key, None)
        if srv is not None:
            srv.close()

    def keys(self) -> list[str]:
        """Keys of the sockets being served."""
        return [*self._udp, *self._tcp]

    # --- UDP ------------------------------------------------------------------------------

    def _on_udp(self, sock: socket.socket, host: bool) -> None:
        handle = self.answerer.handle
        recv = sock.recvfrom
        send = sock.sendto
        client = self.answerer.tables.host_client if host else None
        for _ in range(BURST):
            try:
                data, addr = recv(4096)
            except BlockingIOError:
                return
            except OSError:
                continue
            try:
                resp = handle(data, addr[0], client=client)
            except Exception:  # a bug must not take the loop down; the fuzz tests hunt these
                log.exception("answering a UDP query from %s", addr[0])
                continue
            if resp is None:
                continue
            if resp.__class__ is bytes:
                with contextlib.suppress(OSError):
                    send(resp, addr)
            elif self._forwards < MAX_FORWARDS:
                assert isinstance(resp, Forward)
                self._spawn(self._forward_udp(sock, resp, addr))

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_udp(self, sock: socket.socket, fwd: Forward, addr: object) -> None:
        self._forwards += 1
        try:
            resp = await self.forwarder.resolve(fwd)
        finally:
            self._forwards -= 1
        with contextlib.suppress(OSError):
            sock.sendto(resp, addr)  # type: ignore[call-overload]

    # --- TCP ------------------------------------------------------------------------------

    async def _on_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: bool
    ) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if peer else ""
        if self._tcp_total >= MAX_TCP or self._tcp_per.get(ip, 0) >= MAX_TCP_PER_CLIENT:
            writer.close()
            return
        self._tcp_total += 1
        self._tcp_per[ip] = self._tcp_per.get(ip, 0) + 1
        try:
            await self._tcp_session(reader, writer, ip, host)
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        except Exception:
            log.exception("TCP session with %s", ip)
        finally:
            self._tcp_total -= 1
            self._tcp_per[ip] -= 1
            if not self._tcp_per[ip]:
                del self._tcp_per[ip]
            writer.close()

    async def _tcp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ip: str, host: bool
    ) -> None:
        while True:
            head = await asyncio.wait_for(reader.readexactly(2), IDLE)
            (n,) = struct.unpack("!H", head)
            data = await asyncio.wait_for(reader.readexactly(n), IDLE)
            client = self.answerer.tables.host_client if host else None
            resp = self.answerer.handle(data, ip, tcp=True, client=client)
            if resp is None:
                return
            if not isinstance(resp, bytes):
                resp = await self.forwarder.resolve(resp)
            writer.write(struct.pack("!H", len(resp)) + resp)
            await asyncio.wait_for(writer.drain(), IDLE)

    async def close(self) -> None:
        """Stop serving every socket."""
        for key in self.keys():
            await self.remove(key)
        for task in list(self._tasks):
            task.cancel()
