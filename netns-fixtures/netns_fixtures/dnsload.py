"""A paced DNS client: queries at a fixed rate, counts the ones that got no (right) answer.

``python dnsload.py SERVER NAME EXPECT --rate 200 --timeout 1 --stop-file PATH``, run inside a
container namespace. Sends an A query for NAME every 1/rate seconds (round-robin over 16 UDP
sockets, so several source ports are used) until PATH exists, waits ``timeout`` for the last
answers, then prints one JSON line: ``sent``, ``answered`` (the expected address was in the
answer), ``failed`` (no answer within ``timeout``, or a wrong one), ``longest_outage_s`` (the
longest time from a failed query to the next answered one), ``max_latency_s``,
``first_fail_s``/``last_fail_s`` (seconds after start). Written for the tests and the
benchmark, independent of netd's code; a query counts once, at its deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import struct
import time


def _query(qid: int, name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("server")
    p.add_argument("name")
    p.add_argument("expect", help="the IPv4 address the answer must hold")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--ready-file", default=None, help="created after the first answer")
    args = p.parse_args()
    want = socket.inet_aton(args.expect)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    for s in socks:
        s.setblocking(False)
    interval = 1.0 / args.rate
    start = time.monotonic()
    pending: dict[tuple[int, int], float] = {}  # (socket index, id) -> sent at
    results: list[tuple[float, bool]] = []  # (sent at, answered) in send order, when settled
    sent = 0
    max_latency = 0.0
    stop_at: float | None = None
    next_send = start
    while True:
        now = time.monotonic()
        if stop_at is None and os.path.exists(args.stop_file):
            stop_at = now
        if stop_at is None and now >= next_send:
            i = sent % len(socks)
            qid = (sent // len(socks)) & 0xFFFF
            with contextlib.suppress(OSError):  # counted as failed at its deadline
                socks[i].sendto(_query(qid, args.name), (args.server, 53))
            pending[(i, qid)] = now
            sent += 1
            next_send += interval
        for key, at in list(pending.items()):
            if now - at > args.timeout:
                del pending[key]
                results.append((at, False))
        if stop_at is not None and not pending:
            break
        wait = max(0.0, min(next_send - now, 0.01)) if stop_at is None else 0.01
        ready, _, _ = select.select(socks, [], [], wait)
        for s in ready:
            i = socks.index(s)
            while True:
                try:
                    data = s.recv(512)
                except OSError:
                    break
                qid = struct.unpack("!H", data[:2])[0]
                at = pending.pop((i, qid), None)
                if at is None:
                    continue
                max_latency = max(max_latency, time.monotonic() - at)
                results.append((at, want in data[12:]))
                if args.ready_file and not os.path.exists(args.ready_file):
                    open(args.ready_file, "w").close()
    results.sort()
    longest = 0.0
    fail_start: float | None = None
    fails = [at for at, ok in results if not ok]
    for at, ok in results:
        if not ok and fail_start is None:
            fail_start = at
        elif ok and fail_start is not None:
            longest = max(longest, at - fail_start)
            fail_start = None
    if fail_start is not None:
        longest = max(longest, results[-1][0] - fail_start + interval)
    print(
        json.dumps(
            {
                "sent": sent,
                "answered": sum(1 for _, ok in results if ok),
                "failed": len(fails),
                "longest_outage_s": round(longest, 3),
                "max_latency_s": round(max_latency, 4),
                "first_fail_s": round(fails[0] - start, 3) if fails else None,
                "last_fail_s": round(fails[-1] - start, 3) if fails else None,
                "seconds": round(time.monotonic() - start, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
