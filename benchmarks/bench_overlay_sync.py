"""How long OverlayDriver.sync_remote takes with N remote peers. Not a test.

Run as root from the repository root::

    .venv/bin/python benchmarks/bench_overlay_sync.py [--sizes 100,1000,5000] [--reps 3]

In one sandbox host namespace (never the machine's own), with an overlay network ensured on an
underlay address: N synthetic remote containers (one IPv4 address each, on 50 fake nodes), and
per size, the time of ``sync_remote`` for: the first sync (N FDB + N neighbour entries added),
a resync with nothing changed (what the cluster's periodic resync costs), a resync with 1 % of
the containers replaced, and the sync to no peers (everything removed). Prints a table of
median milliseconds; writes ``benchmarks/results/overlay-sync-*.json``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import sys
import time
from typing import Any

from common import format_table, machine_description, write_results
from netns_fixtures import Sandbox

NET_ID = "5c1e" + "b2" * 30
NODE = "192.168.96.1"


def _peers(n: int, offset: int = 0) -> list[Any]:
    from netd.drivers.overlay import RemotePeer

    out = []
    for i in range(offset, offset + n):
        ip = ipaddress.IPv4Address("10.72.0.0") + 10 + i
        mac = "02:" + ":".join(f"{b:02x}" for b in (i + 1).to_bytes(5, "big"))
        vtep = ipaddress.IPv4Address("192.168.96.0") + 2 + i % 50
        out.append(RemotePeer(ip, mac, vtep))
    return out


def worker(sizes: list[int], reps: int) -> None:
    """Inside the host namespace: the measurements, printed as JSON."""
    from netd.drivers.overlay import OverlayDriver
    from netd.model import network_from_json

    net = network_from_json(
        {
            "id": NET_ID,
            "name": "bench-sync",
            "driver": "overlay",
            "subnets": [{"subnet": "10.72.0.0/16", "gateway": "10.72.0.1"}],
            "options": {"vni": "4343"},
        }
    )
    driver = OverlayDriver(node_address=NODE)
    driver.ensure_network(net)
    out: dict[str, dict[str, list[float]]] = {}
    try:
        for n in sizes:
            times: dict[str, list[float]] = {"first": [], "same": [], "1%": [], "none": []}
            base = _peers(n)
            churn = max(1, n // 100)
            changed = base[churn:] + _peers(churn, offset=n)
            for _ in range(reps):
                for phase, peers in (("first", base), ("same", base), ("1%", changed),
                                     ("none", [])):  # fmt: skip
                    start = time.perf_counter()
                    driver.sync_remote(net, peers)
                    times[phase].append((time.perf_counter() - start) * 1000)
            out[str(n)] = times
    finally:
        driver.teardown_network(net)
        driver.close()
    print(json.dumps(out))


def main() -> None:
    """Measure in a sandbox host and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    if args.worker:
        worker(sizes, args.reps)
        return
    with Sandbox() as box:
        host = box.add_host("h1")
        host.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
        host.run("ip", "addr", "add", f"{NODE}/24", "dev", "up0")
        host.run("ip", "link", "set", "up0", "up")
        raw = host.run(sys.executable, os.path.abspath(__file__), "--worker", "--sizes",
                       args.sizes, "--reps", str(args.reps), timeout=600)  # fmt: skip
    results: dict[str, dict[str, list[float]]] = json.loads(raw)
    rows = [
        [n, *(round(statistics.median(times[p]), 1) for p in ("first", "same", "1%", "none"))]
        for n, times in results.items()
    ]
    machine = machine_description()
    print(f"median of {args.reps}; {machine['cpu']}, {machine['cpus']} CPUs, kernel "
          f"{machine['kernel']}")  # fmt: skip
    print()
    headers = ["peers", "first sync ms", "resync, no change ms", "resync, 1 % changed ms",
               "sync to none ms"]  # fmt: skip
    print(format_table(headers, rows))
    path = write_results("overlay-sync", {"machine": machine, "reps": args.reps, "runs": results})
    print(json.dumps({"results": str(path)}))


if __name__ == "__main__":
    main()
