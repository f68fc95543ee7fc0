"""The forwarder against tiny upstreams on loopback: dead-upstream race, TC -> TCP, SERVFAIL."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from kit import endpoint, network

from netd.dns.answer import Answerer, Forward
from netd.dns.forward import DEADLINE, Forwarder
from netd.dns.records import Tables, build_network_doc
from netd.dns.upstreams import HostUpstreams


class Upstream(asyncio.DatagramProtocol):
    """Answers every A query with 1.2.3.4; names starting with "big" get TC over UDP."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        q = DNSRecord.parse(data)
        r = q.reply()
        if str(q.q.qname).startswith("big"):
            r.header.tc = 1
        else:
            r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("1.2.3.4"), ttl=60))
        assert self.transport is not None
        self.transport.sendto(bytes(r.pack()), addr)


async def tcp_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    (n,) = struct.unpack("!H", await reader.readexactly(2))
    q = DNSRecord.parse(await reader.readexactly(n))
    r = q.reply()
    for i in range(100):
        r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(f"10.0.{i // 200}.{i % 200 + 1}"), ttl=60))
    out = bytes(r.pack())
    writer.write(struct.pack("!H", len(out)) + out)
    await writer.drain()
    writer.close()


@pytest.fixture
def dead() -> Iterator[str]:
    """A loopback UDP socket that never answers (a hung upstream)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def make(tmp_path: Path, servers: list[str]) -> tuple[Answerer, Forwarder]:
    n = network("n", "10.1.0.0/24", id="n" * 64, options={"dns_servers": ",".join(servers)})
    e = endpoint(n, "c")
    a = Answerer()
    a.set_tables(Tables({n.id: build_network_doc(n, [e])}, "dns.netd"))
    return a, Forwarder(a, HostUpstreams(str(tmp_path / "none")))


async def resolve(a: Answerer, f: Forwarder, name: str, edns: bool = False) -> DNSRecord:
    q = DNSRecord.question(name)
    if edns:
        from dnslib import EDNS0

        q.add_ar(EDNS0(udp_len=1232))
    out = a.handle(bytes(q.pack()), "10.1.0.2")
    if isinstance(out, Forward):
        out = await f.resolve(out)
    assert isinstance(out, bytes)
    r = DNSRecord.parse(out)
    assert r.header.id == q.header.id
    return r


def test_dead_upstream_first_does_not_stall(tmp_path: Path, dead: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            Upstream, local_addr=("127.0.0.1", 0)
        )
        live = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
        a, f = make(tmp_path, [dead, live])
        start = time.monotonic()
        r = await resolve(a, f, "one.example")
        assert [str(x.rdata) for x in r.rr] == ["1.2.3.4"]
        assert 0.4 < time.monotonic() - start < 1.0  # one stagger step, not a timeout
        start = time.monotonic()
        await resolve(a, f, "two.example")
        assert time.monotonic() - start < 0.2  # the dead one is remembered and tried last
        queries = proto.queries
        r = await resolve(a, f, "ONE.example")  # cached: upstream not asked again
        assert proto.queries == queries and str(r.q.qname) == "ONE.example."
        assert 0 < r.rr[0].ttl <= 60
        transport.close()

    asyncio.run(main())


def test_tc_retried_over_tcp_and_truncated_for_small_client(tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        server = await asyncio.start_server(tcp_upstream, "127.0.0.1", port)
        a, f = make(tmp_path, [f"127.0.0.1:{port}"])
        r = await resolve(a, f, "big.example")  # 100 A records do not fit 512 bytes
        assert r.header.tc and not r.rr
        q = DNSRecord.question("big.example")
        out = a.handle(bytes(q.pack()), "10.1.0.2", tcp=True)  # the client's TCP retry: cache
        assert isinstance(out, bytes) and len(DNSRecord.parse(out).rr) == 100
        server.close()
        transport.close()

    asyncio.run(main())


def test_servfail_within_deadline_when_nothing_answers(tmp_path: Path, dead: str) -> None:
    async def main() -> None:
        a, f = make(tmp_path, [dead])
        start = time.monotonic()
        r = await resolve(a, f, "x.example", edns=True)
        assert r.header.rcode == RCODE.SERVFAIL
        assert DEADLINE - 0.1 < time.monotonic() - start < DEADLINE + 0.5

    asyncio.run(main())
