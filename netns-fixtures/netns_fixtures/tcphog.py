"""Open and hold many TCP connections to a DNS server from several source addresses.

``python tcphog.py SERVER --sources 10.0.0.5,10.0.0.150,... --per-source 16 --stop-file P``,
run inside a container namespace that holds those addresses. Connects ``per-source`` times
from each source address (without sending anything), waits a second, and prints one JSON line:
``opened`` (connect succeeded), ``held`` (still open: the server did not close it), ``closed``
(the server closed or reset it), ``failed`` (connect failed). Then holds the open ones until
the stop file exists. Written for the DNS fairness tests; independent of netd's code.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("server")
    p.add_argument("--sources", required=True)
    p.add_argument("--per-source", type=int, default=16)
    p.add_argument("--stop-file", required=True)
    args = p.parse_args()
    conns: list[socket.socket] = []
    failed = 0
    for src in args.sources.split(","):
        for _ in range(args.per_source):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(3.0)
            try:
                s.bind((src, 0))
                s.connect((args.server, 53))
                conns.append(s)
            except OSError:
                failed += 1
                s.close()
    time.sleep(1.0)
    closed = 0
    held: list[socket.socket] = []
    readable = set(select.select(conns, [], [], 0)[0]) if conns else set()
    for s in conns:
        if s in readable:
            try:
                gone = s.recv(1) == b""
            except OSError:
                gone = True
            if gone:
                closed += 1
                s.close()
                continue
        held.append(s)
    out = {"opened": len(conns), "held": len(held), "closed": closed, "failed": failed}
    print(json.dumps(out), flush=True)
    while not os.path.exists(args.stop_file):
        time.sleep(0.05)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
