"""A paced DNS client for random names: counts answers by result code, measures latency.

``python dnsflood.py SERVER SUFFIX --rate 3000 --seconds 4 [--timeout 3] [--expect ADDR]``,
run inside a container namespace. Sends an A query for ``<random>.SUFFIX`` every 1/rate
seconds (several due at once are sent together, so high rates hold on a busy machine) over 32
UDP sockets, for ``seconds``, then waits ``timeout`` for the last answers and prints one JSON
line: ``sent``, ``noerror`` (with ``--expect``: NOERROR holding that address), ``servfail``,
``refused``, ``other``, ``unanswered`` (nothing within ``timeout``), and latency percentiles
of the answered queries in ms (``p50_ms``, ``p99_ms``, ``max_ms``). Random names are never
cached, so every query goes to the upstream. Independent of netd's code.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import socket
import struct
import time


def _query(qid: int, name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("server")
    p.add_argument("suffix")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--expect", default=None, help="IPv4 address a good answer holds")
    args = p.parse_args()
    want = socket.inet_aton(args.expect) if args.expect else None
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
    for s in socks:
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    index = {s.fileno(): i for i, s in enumerate(socks)}
    counts = {"noerror": 0, "servfail": 0, "refused": 0, "other": 0}
    latencies: list[float] = []
    pending: dict[tuple[int, int], float] = {}
    interval = 1.0 / args.rate
    start = time.monotonic()
    end = start + args.seconds
    sent = 0
    unanswered = 0
    while True:
        now = time.monotonic()
        while now < end and sent < (now - start) / interval + 1:
            i = sent % len(socks)
            qid = (sent // len(socks)) & 0xFFFF
            name = f"{secrets.token_hex(5)}-{os.getpid()}.{args.suffix}"
            try:
                socks[i].sendto(_query(qid, name), (args.server, 53))
                pending[(i, qid)] = now
            except OSError:
                unanswered += 1
            sent += 1
        if now >= end and (not pending or now > end + args.timeout):
            break
        wait = min(interval, 0.01) if now < end else 0.01
        ready, _, _ = select.select(socks, [], [], wait)
        now = time.monotonic()
        for s in ready:
            i = index[s.fileno()]
            while True:
                try:
                    data = s.recv(4096)
                except OSError:
                    break
                if len(data) < 12:
                    continue
                at = pending.pop((i, struct.unpack("!H", data[:2])[0]), None)
                if at is None:
                    continue
                rcode = data[3] & 0x0F
                if rcode == 0 and (want is None or want in data[12:]):
                    counts["noerror"] += 1
                    latencies.append(now - at)
                elif rcode == 2:
                    counts["servfail"] += 1
                elif rcode == 5:
                    counts["refused"] += 1
                else:
                    counts["other"] += 1
        for key, at in list(pending.items()):
            if now - at > args.timeout:
                del pending[key]
                unanswered += 1
    unanswered += len(pending)
    out = {
        "sent": sent,
        **counts,
        "unanswered": unanswered,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": _percentile(latencies, 1.0),
        "seconds": round(time.monotonic() - start, 3),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
