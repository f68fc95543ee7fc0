"""Forwarding queries the answerer cannot serve to upstream resolvers (asyncio).

A dead upstream must not stall answers: the first (healthy) upstream is asked at once, the next
one after :data:`STAGGER` seconds without an answer, and so on, all racing; the first usable
answer wins. Upstreams that did not answer are remembered as bad and tried last. An answer
with TC set is re-asked over TCP from the same upstream. Each upstream query uses a fresh
socket (random source port) and a random id, and the answer must echo our id and question.
Identical queries in flight share one upstream exchange. With no usable answer within
:data:`DEADLINE`, the client gets SERVFAIL. Answers are cached by :class:`~netd.dns.cache.Cache`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable

from . import wire
from .answer import Answerer, Forward, truncate
from .upstreams import Health, HostUpstreams, parse_server
from .wire import WireError

log = logging.getLogger(__name__)

STAGGER = 0.5  # seconds before the next upstream joins the race
DEADLINE = 1.8  # SERVFAIL after this long (clients typically time out at 2-5 s)
_BAD_RCODES = (wire.SERVFAIL, wire.REFUSED, wire.NOTIMP, wire.FORMERR)


class _Failed(Exception):
    """One upstream exchange failed (timeout, error, bad answer)."""


class Forwarder:
    """Resolves :class:`Forward` requests upstream and caches the answers."""

    def __init__(self, answerer: Answerer, host: HostUpstreams) -> None:
        self.answerer = answerer
        self.host = host
        self.health = Health()
        self._inflight: dict[tuple[tuple[str, ...], bytes, int], asyncio.Future[bytes]] = {}

    async def resolve(self, fwd: Forward) -> bytes:
        """The response for the client (its id and question case), never raising."""
        qend = 12 + len(fwd.question)
        try:
            fut = self._inflight.get(fwd.key)
            if fut is None:
                fut = asyncio.ensure_future(self._exchange(fwd))
                self._inflight[fwd.key] = fut
                fut.add_done_callback(self._done(fwd.key))
            msg = await asyncio.shield(fut)
        except Exception:  # the client still gets an answer, whatever went wrong upstream
            log.debug("forwarding failed", exc_info=True)
            msg = b""
        if not msg:
            return self.servfail(fwd)
        resp = fwd.qid + bytes([(msg[2] & 0xFE) | (fwd.query[2] & 1)]) + msg[3:12]
        resp += fwd.question + msg[qend:]
        if len(resp) > fwd.limit:
            return truncate(resp, qend, fwd.edns)
        return resp

    def _done(self, key: tuple[tuple[str, ...], bytes, int]) -> Callable[[object], None]:
        def done(_fut: object) -> None:
            self._inflight.pop(key, None)

        return done

    @staticmethod
    def servfail(fwd: Forward) -> bytes:
        """SERVFAIL for the client: header, its question, an OPT if it sent one (no longer)."""
        head = fwd.qid + bytes([0x81, 0x80 | wire.SERVFAIL])
        head += struct.pack("!HHHH", 1, 0, 0, 1 if fwd.edns else 0)
        return head + fwd.question + (wire.opt_rr() if fwd.edns else b"")

    def servers(self, fwd: Forward, now: float) -> list[str]:
        """Upstreams for this client, healthy ones first."""
        servers = list(fwd.client.upstreams) or self.host.get(now)
        return self.health.order(servers, now)

    async def _exchange(self, fwd: Forward) -> bytes:
        """Race the upstreams; return the winning upstream message (or b"" if none)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        servers = self.servers(fwd, time.monotonic())
        if not servers:
            return b""
        qid = secrets.token_bytes(2)
        query = qid + fwd.query[2:]
        pending: set[asyncio.Task[bytes]] = set()
        owner: dict[asyncio.Task[bytes], str] = {}
        fallback = b""
        nxt = 0
        try:
            while True:
                if nxt < len(servers) and (not pending or loop.time() - start >= STAGGER * nxt):
                    task = asyncio.ensure_future(self._ask(servers[nxt], query, fwd))
                    owner[task] = servers[nxt]
                    pending.add(task)
                    nxt += 1
                    continue
                left = DEADLINE - (loop.time() - start)
                if left <= 0 or not pending:
                    break
                wait = left
                if nxt < len(servers):
                    wait = min(wait, max(0.0, start + STAGGER * nxt - loop.time()))
                done, pending = await asyncio.wait(
                    pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    server = owner[task]
                    try:
                        msg = task.result()
                    except _Failed:
                        self.health.failed(server, time.monotonic())
                        continue
                    self.health.answered(server)
                    if msg[3] & 0x0F in _BAD_RCODES:
                        fallback = fallback or msg
                        continue
                    self._store(fwd, msg)
                    return msg
                if not done and nxt < len(servers):
                    # The leader is slow: remember it so following queries start elsewhere.
                    for task in pending:
                        self.health.failed(owner[task], time.monotonic())
            for task in pending:
                self.health.failed(owner[task], time.monotonic())
            return fallback
        finally:
            for task in pending:
                task.cancel()

    def _store(self, fwd: Forward, msg: bytes) -> None:
        try:
            walk = wire.walk_response(msg)
        except WireError:
            return
        self.answerer.cache.put(fwd.key, msg, walk, time.monotonic())

    async def _ask(self, server: str, query: bytes, fwd: Forward) -> bytes:
        try:
            addr, port = parse_server(server)
        except Exception as exc:
            raise _Failed(server) from exc
        try:
            msg = await self._udp(addr, port, query)
            if msg[2] & 0x02:
                msg = await self._tcp(addr, port, query)
        except (OSError, WireError, asyncio.IncompleteReadError) as exc:
            raise _Failed(server) from exc
        return msg

    async def _udp(self, addr: str, port: int, query: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (addr, port))
            await loop.sock_sendall(sock, query)
            while True:
                msg = await loop.sock_recv(sock, 65535)
                if _matches(query, msg):
                    return msg
                # Not ours (spoof attempt or stale): keep waiting within the race's deadline.

    async def _tcp(self, addr: str, port: int, query: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(addr, port)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            while True:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                msg = await reader.readexactly(n)
                if _matches(query, msg):
                    return msg
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _matches(query: bytes, msg: bytes) -> bool:
    """Whether ``msg`` is the response to ``query``: same id, QR set, same question."""
    qend = wire.question_end(query)
    return (
        len(msg) >= qend
        and msg[:2] == query[:2]
        and bool(msg[2] & 0x80)
        and msg[12:qend].lower() == query[12:qend].lower()
    )
