"""The DNS server's socket loops (asyncio): UDP receive loops and TCP connections.

Only moves bytes between sockets and :class:`~netd.dns.answer.Answerer` /
:class:`~netd.dns.forward.Forwarder`. UDP: one thread per socket in a blocking loop that takes
every queued query with one ``recvmmsg`` and sends their answers with one ``sendmmsg``
(:mod:`netd.dns.mmsg`; ``recvfrom``/``sendto`` per query where libc lacks them). TCP: several
messages per connection, each message (and the idle gap before it) must arrive within
:data:`IDLE`. Forwarded queries in flight and TCP connections are shared fairly between
clients and networks (:mod:`netd.dns.admission`), so clients that flood, send partial messages
or hold connections cannot starve others (cf. CVE-2024-8418). Sockets are handed in already
bound (the worker cannot bind port 53 itself). No privileges and no records here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time

from . import mmsg
from .admission import Admission
from .answer import Answerer, Forward
from .forward import Forwarder

log = logging.getLogger(__name__)

IDLE = 10.0  # seconds a TCP connection may sit idle or take to send one message
# A UDP thread blocked in a receive wakes at least this often (SO_RCVTIMEO) to see whether it
# should stop: a worker handing its sockets to a successor (the daemon shares them between the
# two) must not exit while one of its threads could still take a query off the shared socket.
WAKE = 1.0


class _UdpThread:
    """One UDP socket served by a dedicated thread in a blocking receive loop."""

    def __init__(self, sock: socket.socket, client: str = "") -> None:
        self.sock = sock
        self.thread: threading.Thread | None = None
        self.stop = False
        # A socket inside a container's namespace (netns_listen) answers as its endpoint's
        # address asked, and that address names its network for the share.
        self.client = client
        self.listen = client or str(sock.getsockname()[0])  # names the network, for its share


class Server:
    """Serves the sockets it is given until they are removed."""

    def __init__(self, answerer: Answerer, forwarder: Forwarder) -> None:
        self.answerer = answerer
        self.forwarder = forwarder
        self._udp: dict[str, _UdpThread] = {}
        self._tcp: dict[str, asyncio.AbstractServer] = {}
        # key -> (socket, host view, client address of a namespace socket or "")
        self._held: dict[str, tuple[socket.socket, bool, str]] = {}
        self.admission = Admission()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- sockets --------------------------------------------------------------------------

    async def add(self, key: str, sock: socket.socket, host: bool, client: str = "") -> None:
        """Start serving an already bound UDP socket or listening TCP socket.

        ``client``: queries on it are answered as if this address had asked (a socket at
        127.0.0.11 inside one container's namespace, :mod:`netd.dns.netns_listen`).
        """
        await self.remove(key)
        self._held[key] = (sock, host, client)
        if sock.type == socket.SOCK_DGRAM:
            sock.setblocking(True)
            secs = int(WAKE)
            usecs = int((WAKE - secs) * 1e6)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", secs, usecs))
            entry = _UdpThread(sock, client)
            entry.thread = threading.Thread(
                target=self._udp_loop,
                args=(entry, host, asyncio.get_running_loop()),
                name=f"netd-dns {key}",
                daemon=True,
            )
            self._udp[key] = entry
            entry.thread.start()
        else:
            sock.setblocking(False)
            self._tcp[key] = await asyncio.start_server(
                lambda r, w: self._on_tcp(r, w, host, client), sock=sock
            )

    async def remove(self, key: str) -> None:
        """Stop serving and close a socket (no-op if unknown).

        A UDP socket is shut down to wake its thread: only for sockets the daemon is
        removing too (shutdown acts on the socket the daemon shares, not on our descriptor).
        """
        self._held.pop(key, None)
        entry = self._udp.pop(key, None)
        if entry is not None:
            entry.stop = True
            with contextlib.suppress(OSError):  # ENOTCONN, but the blocked receive returns
                entry.sock.shutdown(socket.SHUT_RDWR)
            if entry.thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, entry.thread.join, 2.0)
            entry.sock.close()
        srv = self._tcp.pop(key, None)
        if srv is not None:
            srv.close()

    def keys(self) -> list[str]:
        """Keys of the sockets being served."""
        return [*self._udp, *self._tcp]

    def held(self) -> dict[str, tuple[socket.socket, bool, str]]:
        """The sockets being served: key -> (socket, host view, client), for handing back."""
        return dict(self._held)

    # --- UDP ------------------------------------------------------------------------------

    def _udp_loop(self, entry: _UdpThread, host: bool, loop: asyncio.AbstractEventLoop) -> None:
        if mmsg.available():
            self._udp_batches(entry, host, loop)
        else:
            self._udp_single(entry, host, loop)

    def _udp_batches(self, entry: _UdpThread, host: bool, loop: asyncio.AbstractEventLoop) -> None:
        # The hot loop: one recvmmsg takes every queued query (up to mmsg.BATCH; it blocks,
        # with the GIL released, only while none is queued) and one sendmmsg sends all their
        # answers, so the per-datagram system call and address objects of recvfrom/sendto are
        # paid once per batch. An answer's latency is its whole batch's (receive to sent).
        # Locals, because this runs per query.
        batcher = mmsg.Batcher(entry.sock)
        handle = self.answerer.handle
        recv = batcher.recv
        send = batcher.send
        forward = self._forward_soon
        admit = self.admission.admit_forward
        refusal = self.admission.refusal
        servfail = self.forwarder.servfail
        record = self.answerer.stats.mine().record  # this thread's counters
        clock = time.perf_counter
        client = entry.client
        while True:
            try:
                batch = recv()
            except OSError:
                if entry.stop or entry.sock.fileno() < 0:
                    return
                continue
            if not batch:  # shut down (address-less wake-ups are left out)
                if entry.stop:
                    return
                continue
            started = clock()
            answers: list[tuple[bytes, int]] = []
            for data, ip, slot in batch:
                try:
                    resp = handle(data, client or ip, host=host)
                except Exception:  # a bug must not take the loop down; the fuzz tests hunt these
                    log.exception("answering a UDP query from %s", ip)
                    continue
                if resp is None:
                    continue
                if resp.__class__ is bytes:
                    answers.append((resp, slot))
                else:
                    assert isinstance(resp, Forward)
                    keys = self._keys(resp, ip, entry.listen, host)
                    if admit(keys, ip):
                        addr = batcher.address(slot)
                        loop.call_soon_threadsafe(forward, entry.sock, resp, addr, started, keys)
                    elif refusal(keys, started):  # over its share: SERVFAIL now, not silence
                        answers.append((servfail(resp), slot))
            if answers:
                send(answers)  # refused answers are dropped, as a failed sendto is
                seconds = clock() - started
                for resp, _ in answers:
                    record(resp, seconds)
            if entry.stop:  # retiring: the socket is served by another worker now
                return

    def _udp_single(self, entry: _UdpThread, host: bool, loop: asyncio.AbstractEventLoop) -> None:
        # Without recvmmsg/sendmmsg in libc: two system calls per answer and nothing else.
        # Blocking receive in its own thread (the GIL is released while waiting) beats an
        # event loop wake-up per burst plus the EAGAIN that ends each burst.
        handle = self.answerer.handle
        recv = entry.sock.recvfrom
        send = entry.sock.sendto
        forward = self._forward_soon
        record = self.answerer.stats.mine().record  # this thread's counters
        clock = time.perf_counter
        client = entry.client
        while True:
            try:
                data, addr = recv(4096)
            except OSError:
                if entry.stop or entry.sock.fileno() < 0:
                    return
                continue
            if addr is None:  # shut down (or an empty datagram on a shut-down socket)
                if entry.stop:
                    return
                continue
            started = clock()
            try:
                resp = handle(data, client or addr[0], host=host)
            except Exception:  # a bug must not take the loop down; the fuzz tests hunt these
                log.exception("answering a UDP query from %s", addr[0])
                continue
            if resp is None:
                continue
            if resp.__class__ is bytes:
                try:  # noqa: SIM105 (contextlib.suppress costs an object per answer)
                    send(resp, addr)
                except OSError:
                    pass
                record(resp, clock() - started)
            else:
                assert isinstance(resp, Forward)
                keys = self._keys(resp, addr[0], entry.listen, host)
                if self.admission.admit_forward(keys, addr[0]):
                    loop.call_soon_threadsafe(forward, entry.sock, resp, addr, started, keys)
                elif self.admission.refusal(keys, started):
                    with contextlib.suppress(OSError):
                        send(self.forwarder.servfail(resp), addr)
            if entry.stop:  # retiring: the socket is served by another worker now
                return

    def _keys(self, fwd: Forward, src: str, listen: str, host: bool) -> tuple[str, str]:
        """(client, network) of a forwarded query, for its fair share."""
        return self.admission.keys(self.answerer.tables, fwd.client.cid, src, listen, host)

    def _forward_soon(
        self,
        sock: socket.socket,
        fwd: Forward,
        addr: object,
        started: float,
        keys: tuple[str, str],
    ) -> None:
        task = asyncio.ensure_future(self._forward_udp(sock, fwd, addr, started, keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_udp(
        self,
        sock: socket.socket,
        fwd: Forward,
        addr: object,
        started: float,
        keys: tuple[str, str],
    ) -> None:
        try:
            resp = await self.forwarder.resolve(fwd)
        finally:
            self.admission.forwards.release(*keys)
        with contextlib.suppress(OSError):
            sock.sendto(resp, addr)  # type: ignore[call-overload]
        self.answerer.stats.mine().record(resp, time.perf_counter() - started)

    # --- TCP ------------------------------------------------------------------------------

    async def _on_tcp(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: bool,
        as_client: str = "",
    ) -> None:
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        ip = as_client or (str(peer[0]) if peer else "")
        listen = as_client or (str(local[0]) if local else "")
        tables = self.answerer.tables
        client = tables.clients.get(ip)
        keys = self.admission.keys(tables, client.cid if client else "", ip, listen, host)
        if not self.admission.admit_tcp(keys, ip):
            writer.close()  # over its share: closed before reading anything
            return
        try:
            await self._tcp_session(reader, writer, ip, host, keys)
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        except Exception:
            log.exception("TCP session with %s", ip)
        finally:
            self.admission.tcp.release(*keys)
            writer.close()

    async def _tcp_session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ip: str,
        host: bool,
        keys: tuple[str, str],
    ) -> None:
        while True:
            head = await asyncio.wait_for(reader.readexactly(2), IDLE)
            (n,) = struct.unpack("!H", head)
            data = await asyncio.wait_for(reader.readexactly(n), IDLE)
            started = time.perf_counter()
            resp = self.answerer.handle(data, ip, tcp=True, host=host)
            if resp is None:
                return
            if not isinstance(resp, bytes):
                resp = await self._forward_tcp(resp, ip, keys)
            self.answerer.stats.mine().record(resp, time.perf_counter() - started)
            writer.write(struct.pack("!H", len(resp)) + resp)
            await asyncio.wait_for(writer.drain(), IDLE)

    async def _forward_tcp(self, fwd: Forward, ip: str, keys: tuple[str, str]) -> bytes:
        # The connection's keys: its client and the network it connected to.
        if not self.admission.admit_forward(keys, ip):
            return self.forwarder.servfail(fwd)  # TCP cannot be spoofed: no answer rate
        try:
            return await self.forwarder.resolve(fwd)
        finally:
            self.admission.forwards.release(*keys)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for forwarded queries in flight to be answered."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Stop serving every socket."""
        # UDP threads are told to stop but their sockets are not shut down: the daemon hands
        # the same sockets to the next worker, which may be serving them already. Each thread
        # returns after answering the batch it holds, or within WAKE when idle; wait for them,
        # so no query taken off a shared socket dies with this process.
        entries = list(self._udp.values())
        for entry in entries:
            entry.stop = True
        self._udp.clear()
        self._held.clear()
        loop = asyncio.get_running_loop()
        for entry in entries:
            if entry.thread is not None:
                await loop.run_in_executor(None, entry.thread.join, WAKE + 1.0)
        for key in list(self._tcp):
            await self.remove(key)
        for task in list(self._tasks):
            task.cancel()
