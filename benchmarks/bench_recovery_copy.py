"""What the recovery copy costs a store write: SqliteStore alone against MirroredStore. Not a test.

Run from the repository root (no root needed, no namespaces):

    .venv/bin/python benchmarks/bench_recovery_copy.py [--endpoints 500] [--dir DIR]

One network, then for each of N endpoints the two writes an ADD makes (``put_endpoint`` in state
``creating``, then ``ready``), then N ``delete_endpoint`` (a DEL). Each is timed alone, first on
a bare :class:`~netd.store.sqlite.SqliteStore`, then on the same engine wrapped in
:class:`~netd.store.mirror.MirroredStore` writing its copy beside it; the difference is what the
copy adds to an ADD (two writes) and a DEL (one). Also times the daemon's start-up ``sync`` over
N endpoints, with the copy up to date and with it absent. ``--dir`` puts the files on the
filesystem to measure (default: a temporary directory under benchmarks/results, which is on the
same disk as the repository; /tmp may be a tmpfs, where fsync is free).

Output: a table on stdout (copy it into docs/benchmarks.md) and a JSON file under
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, format_table, machine_description, summarize, write_results

from netd.model import Endpoint, Network, Subnet
from netd.store.base import Store
from netd.store.mirror import CopyWriter, MirroredStore
from netd.store.sqlite import SqliteStore

NET_ID = "be" * 32


def network() -> Network:
    subnet = Subnet(ipaddress.ip_network("10.64.0.0/16"), ipaddress.ip_address("10.64.0.1"))
    return Network(NET_ID, "bench", "bridge", (subnet,), labels={"k": "v"}, created=1.0)


def endpoint(i: int) -> Endpoint:
    address = ipaddress.ip_interface(f"10.64.{(i + 2) // 256}.{(i + 2) % 256}/16")
    return Endpoint(
        network_id=NET_ID,
        container_id=f"{i:064x}",
        ifname="eth0",
        netns=f"/run/netns/c{i}",
        host_ifname=f"nv{i:013x}",
        addresses=(address,),
        mac="02:42:0a:40:00:02",
        name=f"c{i}",
        aliases=("web",),
        state="creating",
        created=2.0 + i,
    )


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def run(store: Store, n: int) -> dict[str, list[float]]:
    """ADD (two puts) and DEL (one delete) times in ms for ``n`` endpoints."""
    store.create_network(network())
    add, delete = [], []
    for i in range(n):
        ep = endpoint(i)
        cursor = {"10.64.0.0/16": ep.addresses[0].ip}
        ready = dataclasses.replace(ep, state="ready")
        add.append(
            timed(partial(store.put_endpoint, ep, cursor))
            + timed(partial(store.put_endpoint, ready, {}))
        )
    for i in range(n):
        cid = endpoint(i).container_id
        delete.append(timed(partial(store.delete_endpoint, NET_ID, cid, "eth0")))
    return {"add": add, "del": delete}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    parent = args.dir or RESULTS_DIR
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-copy-", dir=parent))
    results: dict[str, Any] = {"machine": machine_description(), "endpoints": args.endpoints}
    try:
        with SqliteStore(work / "bare.db") as bare:
            results["sqlite"] = run(bare, args.endpoints)
        with MirroredStore(SqliteStore(work / "mirrored.db"), CopyWriter(work / "copy")) as m:
            m.sync()
            results["mirrored"] = run(m, args.endpoints)
            for i in range(args.endpoints):
                m.put_endpoint(dataclasses.replace(endpoint(i), state="ready"), {})
            results["sync_current_ms"] = timed(m.sync)
            shutil.rmtree(work / "copy")
            results["sync_absent_ms"] = timed(m.sync)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for what in ("add", "del"):
        bare, mirrored = summarize(results["sqlite"][what]), summarize(results["mirrored"][what])
        rows.append(
            [
                f"{what.upper()} ({'2 puts' if what == 'add' else '1 delete'})",
                *(
                    round(v * 1000)
                    for v in (
                        bare["p50"],
                        mirrored["p50"],
                        mirrored["p50"] - bare["p50"],
                        bare["p95"],
                        mirrored["p95"],
                    )
                ),
            ]
        )
    m = machine_description()
    print(f"Machine: {m['cpu']}, {m['cpus']} CPUs, kernel {m['kernel']}, Python {m['python']}")
    print(f"\nStore writes in µs, {args.endpoints} endpoints on one network, files in {parent}\n")
    headers = ["writes of", "sqlite p50", "+copy p50", "added p50", "sqlite p95", "+copy p95"]
    print(format_table(headers, rows))
    print(
        f"\nstart-up sync over {args.endpoints} endpoints: copy current "
        f"{results['sync_current_ms']:.1f} ms, copy absent {results['sync_absent_ms']:.1f} ms"
    )
    path = write_results("bench_recovery_copy", results)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
