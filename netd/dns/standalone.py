"""Run the DNS manager on its own from a JSON state file, without the daemon.

``python -m netd.dns.standalone STATE.json [--host-listen 127.0.0.1:5353] ...`` serves the
networks and endpoints in STATE.json (a list of ``{"network": ..., "endpoints": [...]}`` in the
store's JSON form, :func:`netd.model.to_json`), re-reads it on SIGHUP, and prints one JSON line
``{"worker_pid": N, "worker_pids": [N, ...], "generation": G}`` to stdout after each (re)load
and each worker restart.
It is the harness for the DNS benchmark and integration tests and a debugging aid; it must run
inside the namespace whose gateways it serves. It adds no behaviour of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from ..model import Endpoint, Network, endpoint_from_json, network_from_json
from .manager import DnsManager


def load_state(path: str) -> list[tuple[Network, list[Endpoint]]]:
    """Networks and endpoints from a state file."""
    with open(path, encoding="utf-8") as f:
        data: list[dict[str, Any]] = json.load(f)
    return [
        (network_from_json(item["network"]), [endpoint_from_json(e) for e in item["endpoints"]])
        for item in data
    ]


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m netd.dns.standalone")
    p.add_argument("state")
    p.add_argument("--domain", default="dns.netd")
    p.add_argument("--ttl", type=int, default=5)
    p.add_argument("--user", default=None)
    p.add_argument("--upstreams-from", default="/etc/resolv.conf")
    p.add_argument("--host-listen", default=None)
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: default)")
    args = p.parse_args(argv)
    # stderr: the manager's lines and the workers' (which arrive through their log pipes)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mgr = DnsManager(
        domain=args.domain,
        ttl=args.ttl,
        user=args.user,
        upstreams_from=args.upstreams_from,
        host_listen=args.host_listen,
        workers=args.workers or None,
    )
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    mgr.start()
    generation = 0
    mgr.set_state(load_state(args.state))
    last_pids: list[int | None] | None = None
    try:
        while not stop.is_set():
            if reload.is_set():
                reload.clear()
                mgr.set_state(load_state(args.state))
                generation += 1
                last_pids = None
            pids = mgr.worker_pids()
            if pids and None not in pids and pids != last_pids:
                last_pids = pids
                line = {"worker_pid": pids[0], "worker_pids": pids, "generation": generation}
                print(json.dumps(line), flush=True)
            stop.wait(0.02)
    finally:
        mgr.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
