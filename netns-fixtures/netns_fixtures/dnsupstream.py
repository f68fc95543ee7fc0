"""A test upstream resolver: answers on some addresses, swallows every query on others.

``python dnsupstream.py --answer 10.60.0.3 --swallow 10.60.0.2 [--address 1.2.3.4]``, run
inside the namespace that holds those addresses. On an ``--answer`` address every query gets
NOERROR with one A record (``--address``, TTL 0 so resolvers do not keep it); on a
``--swallow`` address queries are read and never answered (an upstream that hangs). Written
for the DNS fairness tests and benchmark; needs nothing but the standard library.
"""

from __future__ import annotations

import argparse
import select
import socket
import struct


def answer(query: bytes, address: bytes) -> bytes | None:
    """NOERROR with one A record for the question, or None for what is not a plain query."""
    if len(query) < 17 or query[2] & 0x80:
        return None
    end = query.find(b"\x00", 12)
    if end < 0 or end + 5 > len(query):
        return None
    question = query[12 : end + 5]
    flags = 0x8080 | (query[2] & 0x01) << 8  # QR, RA, and the query's RD
    head = query[:2] + struct.pack("!HHHHH", flags, 1, 1, 0, 0)
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + address
    return head + question + rr


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--answer", action="append", default=[])
    p.add_argument("--swallow", action="append", default=[])
    p.add_argument("--address", default="1.2.3.4")
    args = p.parse_args()
    addr = socket.inet_aton(args.address)
    socks: dict[socket.socket, bool] = {}
    for ip, answers in [(a, True) for a in args.answer] + [(s, False) for s in args.swallow]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((ip, 53))
        s.setblocking(False)
        socks[s] = answers
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select(list(socks), [], [])
        for s in ready:
            while True:
                try:
                    data, peer = s.recvfrom(4096)
                except BlockingIOError:
                    break
                if socks[s]:
                    resp = answer(data, addr)
                    if resp is not None:
                        s.sendto(resp, peer)


if __name__ == "__main__":
    main()
