"""A well-behaved container's forwarded DNS beside flooding ones (issue #14, "DNS fairness").

Root; builds its own sandbox (a host namespace running a real `netd daemon`, network "app"
10.77.0.0/24) and never touches the initial namespace. Upstreams run in an "up" namespace
wired to the host (``netns-fixtures/netns_fixtures/dnsupstream.py``): 10.60.0.2 swallows
every query (an upstream that never answers), 10.60.0.3 answers every query. Container "good"
uses 10.60.0.3 (``--dns``), the "flood*" containers 10.60.0.2. Clients are
``netns-fixtures/netns_fixtures/dnsflood.py``: A queries for random names (so nothing is
cached and every query is forwarded), paced, 3 s timeout.

Scenarios, each ``--seconds`` long: the good client alone at ``--rate`` q/s; beside one
flooder at ``--flood-rate`` q/s; beside four flooders sharing that rate. The table shows the
good client's queries, failures (no NOERROR within 3 s) and latency percentiles, and what the
flooders got (SERVFAIL, no answer). A JSON file goes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from common import ROOT, format_table, machine_description, write_results

FIXTURES = ROOT / "netns-fixtures" / "netns_fixtures"
GW = "10.77.0.1"
SWALLOW, ANSWER = "10.60.0.2", "10.60.0.3"


def flood_client(ns: Any, suffix: str, rate: float, seconds: float) -> Any:
    return ns.spawn(
        sys.executable, str(FIXTURES / "dnsflood.py"), GW, suffix, "--rate", str(rate),
        "--seconds", str(seconds), "--timeout", "3", stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def collect(proc: Any) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=120)
    return dict(json.loads(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=50.0, help="the good client's queries/s")
    p.add_argument("--flood-rate", type=float, default=3000.0, help="flooders' queries/s, total")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_dns_fairness.py needs root (it builds network namespaces)")
    from netns_fixtures import Sandbox
    from netns_fixtures.daemon import Daemon

    scenarios = [("good alone", 0), ("good + 1 flooder", 1), ("good + 4 flooders", 4)]
    rows = []
    raw: dict[str, Any] = {}
    with Sandbox(prefix=f"nbench-{os.getpid()}") as box:
        host = box.add_host()
        daemon = Daemon(host).start()
        try:
            up = box.add_ns("up")
            box.wire(host, up, "10.60.0.1/24", f"{SWALLOW}/24")
            up.run("ip", "addr", "add", f"{ANSWER}/24", "dev", "down0")
            upstream = up.spawn(
                sys.executable, str(FIXTURES / "dnsupstream.py"), "--swallow", SWALLOW,
                "--answer", ANSWER, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert upstream.stdout is not None and upstream.stdout.readline() == "ready\n"
            upstream.stdout.close()
            daemon.cli("network", "create", "app", "--subnet", "10.77.0.0/24")
            good = box.add_ns("good")
            daemon.cli("network", "connect", "app", "--netns", good.path, "--dns", ANSWER)
            flooders = [box.add_ns(f"flood{i}") for i in range(4)]
            for ns in flooders:
                daemon.cli("network", "connect", "app", "--netns", ns.path, "--dns", SWALLOW)
            for name, n in scenarios:
                floods = [
                    flood_client(ns, "void.test", args.flood_rate / n, args.seconds)
                    for ns in flooders[:n]
                ]
                g = collect(flood_client(good, "ok.test", args.rate, args.seconds))
                fs = [collect(f) for f in floods]
                raw[name] = {"good": g, "flooders": fs}
                print(f"{name}: {raw[name]}", file=sys.stderr, flush=True)
                sent = sum(f["sent"] for f in fs)
                rows.append(
                    [
                        name, g["sent"], g["sent"] - g["noerror"], g["p50_ms"], g["p99_ms"],
                        g["max_ms"], sent or "—",
                        sum(f["servfail"] for f in fs) if fs else "—",
                        sum(f["unanswered"] for f in fs) if fs else "—",
                    ]
                )  # fmt: skip
        finally:
            daemon.close()
    headers = [
        "scenario", "good sent", "good failed", "good p50 ms", "good p99 ms", "good max ms",
        "flood sent", "flood SERVFAIL", "flood unanswered",
    ]  # fmt: skip
    print(format_table(headers, rows))
    print(
        f"\ngood: {args.rate} q/s, flooders: {args.flood_rate} q/s in total, "
        f"{args.seconds} s per scenario; every name random (forwarded)"
    )
    print(f"machine: {machine_description()}")
    path = write_results("dns_fairness", {"args": vars(args), "rows": rows, "raw": raw})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
