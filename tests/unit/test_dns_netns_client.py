"""A socket at 127.0.0.11 in a container answers as that container's address (netns_listen).

Queries on such a socket come from the container's loopback, which names nobody; the server
answers them as the endpoint the socket was made for. Loopback sockets stand in for the
container's here (unit test: no namespaces).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from pathlib import Path

from dnslib import RCODE, DNSRecord

from netd.dns.answer import Answerer
from netd.dns.forward import Forwarder
from netd.dns.netns_listen import client_address, socket_keys
from netd.dns.records import Tables, build_network_doc
from netd.dns.server import Server
from netd.dns.upstreams import HostUpstreams
from netd.model import Endpoint, Network, Subnet

NET = Network(
    id="e5" * 32,
    name="lanet",
    driver="macvlan",
    subnets=(Subnet(ipaddress.ip_network("10.9.0.0/24"), ipaddress.ip_address("10.9.0.1")),),
)


def ep(cid: str, addr: str, name: str) -> Endpoint:
    return Endpoint(
        network_id=NET.id, container_id=cid, ifname="eth0", netns=f"/run/netns/{cid}",
        host_ifname="", addresses=(ipaddress.ip_interface(f"{addr}/24"),), name=name,
        state="ready",
    )  # fmt: skip


def udp_ask(addr: tuple[str, int], name: str) -> DNSRecord:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(bytes(DNSRecord.question(name).pack()), addr)
        return DNSRecord.parse(s.recv(4096))


def tcp_ask(addr: tuple[str, int], name: str) -> DNSRecord:
    with socket.create_connection(addr, timeout=3) as s:
        q = bytes(DNSRecord.question(name).pack())
        s.sendall(struct.pack("!H", len(q)) + q)
        (n,) = struct.unpack("!H", s.recv(2))
        return DNSRecord.parse(s.recv(n))


def test_queries_are_answered_for_the_socket_s_endpoint(tmp_path: Path) -> None:
    async def main() -> None:
        answerer = Answerer()
        eps = [ep("c1", "10.9.0.10", "web"), ep("c2", "10.9.0.11", "db")]
        answerer.set_tables(Tables({NET.id: build_network_doc(NET, eps)}, "dns.netd"))
        server = Server(answerer, Forwarder(answerer, HostUpstreams(str(tmp_path / "none"))))
        socks = []
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            for client in ("10.9.0.10", ""):
                sock = socket.socket(socket.AF_INET, kind)
                sock.bind(("127.0.0.1", 0))
                if kind == socket.SOCK_STREAM:
                    sock.listen(8)
                socks.append((sock, client))
                await server.add(f"k{len(socks)}", sock, False, client)
        try:
            (udp_c, _), (udp_plain, _), (tcp_c, _), (tcp_plain, _) = socks
            got = await asyncio.to_thread(udp_ask, udp_c.getsockname(), "db")
            assert [str(r.rdata) for r in got.rr] == ["10.9.0.11"]
            got = await asyncio.to_thread(tcp_ask, tcp_c.getsockname(), "db.dns.netd")
            assert [str(r.rdata) for r in got.rr] == ["10.9.0.11"]
            # The same query on a plain socket comes from 127.0.0.1, no container: refused.
            got = await asyncio.to_thread(udp_ask, udp_plain.getsockname(), "db")
            assert got.header.rcode == RCODE.REFUSED
            got = await asyncio.to_thread(tcp_ask, tcp_plain.getsockname(), "db")
            assert got.header.rcode == RCODE.REFUSED
            held = server.held()
            assert {k: v[1:] for k, v in held.items()} == {
                "k1": (False, "10.9.0.10"), "k2": (False, ""),
                "k3": (False, "10.9.0.10"), "k4": (False, ""),
            }  # fmt: skip
        finally:
            await server.close()
            for sock, _ in socks:
                sock.close()

    asyncio.run(main())


def test_keys_and_client_address() -> None:
    e = Endpoint(
        network_id=NET.id, container_id="c1", ifname="eth1", netns="/run/netns/c1",
        host_ifname="", addresses=(ipaddress.ip_interface("fd00::5/64"),
                                   ipaddress.ip_interface("10.9.0.5/24")),
    )  # fmt: skip
    assert socket_keys(NET, e) == (
        "netns:e5e5e5e5e5e5:c1/eth1:udp",
        "netns:e5e5e5e5e5e5:c1/eth1:tcp",
    )
    assert client_address(e) == "10.9.0.5"  # IPv4 first; any of its addresses names the client
    assert client_address(ep("c2", "10.9.0.6", "x")) == "10.9.0.6"
