"""Firewall scale benchmark: time to publish one more port with 0, 100, 1,000 already published.

Run from the repository root, as root:  .venv/bin/python benchmarks/bench_firewall.py

For each backend (nftables, iptables) it builds a sandbox host namespace with one bridge,
loads N endpoints each publishing one TCP port (``sync``), then times ``add_endpoint`` for
one more endpoint with one port, and its ``remove_endpoint``, ``--reps`` times each. The
reference CNI ``portmap`` plugin (Debian containernetworking-plugins) is measured in the same
run when installed: N ADDs first, then the timed ADD of one more. Everything runs inside the
sandbox's host namespace (this script re-executes itself there with ``--inner``); nothing
touches the initial namespace. Not a test: it prints a table and writes a result file.
``--anti-spoof`` adds a row set for nftables with the network option ``anti_spoof=true`` (each
endpoint then also adds its port and address to the bridge table's sets).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    exec_plugin,
    format_table,
    machine_description,
    summarize,
    write_results,
)

PORTMAP = Path("/usr/lib/cni/portmap")
BRIDGE = "nd-bench"


def _records(n: int, options: dict[str, str] | None = None) -> tuple[Any, list[Any]]:
    from netd.model import Endpoint, Network, PortMapping, Subnet

    net = Network(
        id="f" * 64,
        name="bench",
        driver="bridge",
        options=options or {},
        subnets=(
            Subnet(ipaddress.ip_network("10.200.0.0/16"), ipaddress.ip_address("10.200.0.1")),
        ),
    )
    eps = [_endpoint(net, i) for i in range(n)]
    del Endpoint, PortMapping
    return net, eps


def _endpoint(net: Any, i: int) -> Any:
    from netd.model import Endpoint, PortMapping

    addr = ipaddress.ip_address("10.200.0.2") + i
    return Endpoint(
        network_id=net.id,
        container_id=f"bench{i}",
        ifname="eth0",
        netns=f"/run/netns/bench{i}",
        host_ifname=f"nvb{i}",
        addresses=(ipaddress.ip_interface(f"{addr}/16"),),
        port_mappings=(PortMapping(20000 + i, 80),),
    )


def inner_netd(backend: str, sizes: list[int], reps: int) -> list[dict[str, Any]]:
    """Time add/remove of one more published port on ``backend`` (inside the host ns)."""
    from netd.firewall import make_firewall

    kind, _, option = backend.partition("+")
    fw = make_firewall(kind)
    rows = []
    for n in sizes:
        net, eps = _records(n, {option: "true"} if option else None)
        fw.sync([(net, BRIDGE)], eps)
        adds, removes = [], []
        for r in range(reps):
            extra = _endpoint(net, n + 1 + r)
            t0 = time.perf_counter()
            fw.add_endpoint(net, extra)
            t1 = time.perf_counter()
            fw.remove_endpoint(net, extra)
            t2 = time.perf_counter()
            adds.append((t1 - t0) * 1000)
            removes.append((t2 - t1) * 1000)
        t0 = time.perf_counter()
        fw.sync([(net, BRIDGE)], eps)
        sync_ms = (time.perf_counter() - t0) * 1000
        rows.append(
            {
                "backend": backend,
                "existing": n,
                "add": summarize(adds),
                "remove": summarize(removes),
                "sync_ms": sync_ms,
            }
        )
        fw.sync([], [])
    return rows


def _portmap_conf(i: int) -> dict[str, Any]:
    addr = ipaddress.ip_address("10.200.0.2") + i
    return {
        "cniVersion": "1.0.0",
        "name": "bench",
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": {
            "portMappings": [{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]
        },
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": BRIDGE}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": f"{addr}/16", "gateway": "10.200.0.1", "interface": 1}],
        },
    }


def _env() -> dict[str, str]:
    # Our own (sandbox host) namespace: portmap only works in the namespace it runs in.
    return {"netns": f"/proc/{os.getpid()}/ns/net", "cni_path": str(PORTMAP.parent)}


def inner_portmap(sizes: list[int], reps: int) -> list[dict[str, Any]]:
    """The reference portmap plugin: N ADDs, then time one more ADD (and its DEL)."""
    rows = []
    done = 0
    for n in sizes:
        while done < n:
            res = exec_plugin(
                PORTMAP, "ADD", _portmap_conf(done), container_id=f"bench{done}", **_env()
            )
            if res.code != 0:
                raise RuntimeError(f"portmap ADD {done}: {res.out or res.err}")
            done += 1
        adds, dels = [], []
        for r in range(reps):
            i = 50000 + r
            conf = _portmap_conf(i % 40000)
            conf["runtimeConfig"]["portMappings"][0]["hostPort"] = 60000 + r
            add = exec_plugin(PORTMAP, "ADD", conf, container_id=f"extra{i}", **_env())
            rm = exec_plugin(PORTMAP, "DEL", conf, container_id=f"extra{i}", **_env())
            if add.code != 0 or rm.code != 0:
                raise RuntimeError(f"portmap extra: {add.out or add.err} {rm.out or rm.err}")
            adds.append(add.ms)
            dels.append(rm.ms)
        rows.append(
            {
                "backend": "portmap (CNI reference)",
                "existing": n,
                "add": summarize(adds),
                "remove": summarize(dels),
                "sync_ms": None,
            }
        )
    return rows


def inner(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.inner == "portmap":
        rows = inner_portmap(sizes, args.reps)
    else:
        rows = inner_netd(args.inner, sizes, args.reps)
    print(json.dumps(rows))


def outer(args: argparse.Namespace) -> None:
    from netns_fixtures import Sandbox

    rows: list[dict[str, Any]] = []
    targets = ["nftables", "iptables"] + (
        ["portmap"] if PORTMAP.exists() and not args.no_portmap else []
    )
    if args.anti_spoof:
        targets.insert(1, "nftables+anti_spoof")
    for target in targets:
        with Sandbox() as box:  # a fresh host per backend: nothing carries over
            host = box.add_host()
            host.run("ip", "link", "add", BRIDGE, "type", "bridge")
            host.run("ip", "addr", "add", "10.200.0.1/16", "dev", BRIDGE)
            host.run("ip", "link", "set", BRIDGE, "up")
            out = host.run(
                sys.executable,
                __file__,
                "--inner",
                target,
                "--sizes",
                args.sizes,
                "--reps",
                str(args.reps),
                timeout=3600,
            )
            rows += json.loads(out.strip().splitlines()[-1])
    table = format_table(
        [
            "backend",
            "ports already published",
            "publish one more p50 ms",
            "p95 ms",
            "unpublish p50 ms",
            "full sync ms",
        ],
        [
            [
                r["backend"],
                r["existing"],
                round(r["add"]["p50"], 2),
                round(r["add"]["p95"], 2),
                round(r["remove"]["p50"], 2),
                None if r["sync_ms"] is None else round(r["sync_ms"], 1),
            ]
            for r in rows
        ],
    )
    print(table)
    path = write_results("firewall", {"machine": machine_description(), "rows": rows})
    print(f"results: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100,1000")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--no-portmap", action="store_true")
    parser.add_argument("--anti-spoof", action="store_true", help="also nftables+anti_spoof")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
    else:
        outer(args)


if __name__ == "__main__":
    main()
