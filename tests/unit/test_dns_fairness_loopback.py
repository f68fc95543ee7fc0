"""The DNS server's UDP loop with a flooding and a well-behaved client, on loopback.

Two "containers" (127.0.0.2 and 127.0.0.3 in the records) ask the real :class:`Server` on
127.0.0.1: the flooder's upstream swallows every query, the good one's answers. The flooder
sends more queries for random names than the worker has forward slots in total; before the
per-client shares it took them all and the good client's queries were dropped without an
answer. Now the flooder is held at its share and gets SERVFAIL at once for the rest, and the
good client is answered. (The namespace version with the daemon is
tests/ns/test_dns_fairness.py.)
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from kit import endpoint, network

from netd.dns.answer import Answerer
from netd.dns.forward import Forwarder
from netd.dns.limits import FORWARDS
from netd.dns.records import Tables, build_network_doc
from netd.dns.server import Server
from netd.dns.upstreams import HostUpstreams

FLOOD = FORWARDS.hard + 500  # more than every slot of the worker


class Upstream(asyncio.DatagramProtocol):
    """Answers every A query with 1.2.3.4."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        q = DNSRecord.parse(data)
        r = q.reply()
        r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("1.2.3.4"), ttl=60))
        assert self.transport is not None
        self.transport.sendto(bytes(r.pack()), addr)


@pytest.fixture
def swallower() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def tables(dead: str, live: str) -> Tables:
    net = network("n", "127.0.0.0/8", id="n" * 64)
    eps = [
        endpoint(net, cid, ip=f"{addr}/8", dns_servers=(upstream,))
        for cid, addr, upstream in (("flood", "127.0.0.2", dead), ("good", "127.0.0.3", live))
    ]
    return Tables({net.id: build_network_doc(net, eps)}, "dns.netd")


def flood(server: tuple[str, int], n: int, sent: threading.Event) -> dict[str, int]:
    """Send ``n`` queries for random names from 127.0.0.2; count answers by rcode for 1 s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    for i in range(n):
        name = f"{secrets.token_hex(6)}.flood.example"
        sock.sendto(bytes(DNSRecord.question(name).pack()), server)
        if i % 50 == 49:
            time.sleep(0.003)  # ~15k q/s: a flood, but no socket buffer overruns
    sent.set()
    counts: dict[str, int] = {}
    sock.settimeout(1.0)
    try:
        while True:
            r = DNSRecord.parse(sock.recv(4096))
            key = RCODE.get(r.header.rcode)
            counts[key] = counts.get(key, 0) + 1
    except TimeoutError:
        pass
    sock.close()
    return counts


def ask(server: tuple[str, int], n: int) -> list[float | None]:
    """``n`` queries from 127.0.0.3, one at a time: latency, or None for no answer in 2 s."""
    out: list[float | None] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.3", 0))
    sock.settimeout(2.0)
    for i in range(n):
        q = DNSRecord.question(f"good{i}.example")
        start = time.monotonic()
        sock.sendto(bytes(q.pack()), server)
        try:
            r = DNSRecord.parse(sock.recv(4096))
            ok = r.header.rcode == RCODE.NOERROR and [str(x.rdata) for x in r.rr] == ["1.2.3.4"]
            out.append(time.monotonic() - start if ok else None)
        except TimeoutError:
            out.append(None)
    sock.close()
    return out


def test_flooder_gets_servfail_and_neighbour_is_answered(tmp_path: Path, swallower: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        live = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
        answerer = Answerer()
        answerer.set_tables(tables(swallower, live))
        server = Server(answerer, Forwarder(answerer, HostUpstreams(str(tmp_path / "none"))))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        addr = sock.getsockname()
        await server.add("udp:test", sock, False)
        try:
            sent = threading.Event()
            flooding = asyncio.ensure_future(asyncio.to_thread(flood, addr, FLOOD, sent))
            # Ask while the flood holds what it can: every query sent, none timed out yet.
            await asyncio.to_thread(sent.wait, 10)
            good = await asyncio.to_thread(ask, addr, 20)
            counts = await flooding
            snap = server.admission.snapshot()
        finally:
            await server.close()
            sock.close()  # the server leaves shared sockets open (a successor may serve them)
            transport.close()
        assert None not in good, good
        # held at its share; what is beyond it is answered SERVFAIL at once, not dropped
        refused = snap["forwards"]["refused"]  # type: ignore[index]
        assert FLOOD - FORWARDS.per_client >= refused >= FLOOD // 2, snap
        assert counts.get("SERVFAIL", 0) >= refused * 0.9, (counts, snap)

    asyncio.run(main())
