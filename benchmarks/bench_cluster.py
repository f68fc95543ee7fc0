"""The overlay against a local bridge on the same node, and names propagating across hosts.

Run from the repository root, as root:  .venv/bin/python benchmarks/bench_cluster.py
(options: --containers 40 --rounds 3 --propagation 60)

Issue 16's benchmarks on real daemons: three hosts and one etcd on one machine, each a network
namespace on a plain IP underlay (``netns_fixtures.cluster``, the same topology the tests use);
nothing touches the machine's own network.

- ADD: attaches through h1's API (``POST /v1/networks/NAME/connect``, what the CLI does),
  alternating one on a local bridge network and one on an overlay network, so both see the same
  machine state; p50/p95 of each and their ratio (goal: overlay <= 1.5x bridge).
- etcd round trips per ADD: the daemon's own count of transactions it sent
  (``netd_etcd_transactions`` on h1's /metrics) across the overlay ADDs, divided by their
  number (goal ≤ 2). The sync's view reads (triggered by the watch) are counted too, and said
  apart: they are one read per batch of changes, not per ADD.
- Name propagation: time from the moment an ADD on h2 returns until h3's DNS answers the new
  name (asked from a container on h3 every 2 ms with a real DNS query), p50/p95/p99 (goal p99
  ≤ 1 s).
- CPU per ADD of every process (h1's daemon and its DNS workers, each other node's, etcd, this
  client), from /proc, so a figure can be read against what the machine had to give.

``--gap MS`` pauses after each ADD (default 0: back to back, each ADD also meeting what the
one before set off on the other nodes). ``--hosts 1`` runs h1 and etcd only (the ADD "on the
same node" without other nodes on the same CPUs; no propagation figure). ``--pin`` puts h1's
daemon and this client on the first CPU and the other nodes and etcd on the others: on a real
cluster they are other machines, whose work does not take h1's CPU (here they share two).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from common import format_table, machine_description, percentile, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "netns-fixtures"))
from netns_fixtures import Namespace, wait_for
from netns_fixtures.cluster import Cluster, scratch_dir
from netns_fixtures.daemon import Daemon
from netns_fixtures.etcd import inside

DOMAIN = "dns.netd"


def connect(d: Daemon, net: str, ns: Namespace) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    status, body = d.request("POST", f"/v1/networks/{net}/connect",
                             {"netns": ns.path, "name": ns.name})  # fmt: skip
    took = time.perf_counter() - start
    if status != 201:
        raise RuntimeError(f"connect to {net}: {status} {body}")
    return took * 1000, body


def etcd_counters(d: Daemon) -> dict[str, float]:
    _, text = raw_get(d, "/metrics")
    out = {}
    for name in ("transactions", "compare_failures", "claims", "borrows"):
        m = re.search(rf"^netd_etcd_{name}_total (\S+)$", text, flags=re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def raw_get(d: Daemon, path: str) -> tuple[int, str]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(d.socket))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n".encode())
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        from netns_fixtures.daemon import dechunk

        body = dechunk(body)
    return int(head.split()[1]), body.decode(errors="replace")


def dns_query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + b"\x00\x01\x00\x01"


def answered(sock: socket.socket, server: str, name: str, qid: int) -> bool:
    """One A query; True if the answer has at least one record."""
    sock.sendto(dns_query(name, qid), (server, 53))
    try:
        data, _ = sock.recvfrom(4096)
    except TimeoutError:
        return False
    return len(data) >= 12 and struct.unpack("!H", data[6:8])[0] > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=40, help="ADDs per network per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--propagation", type=int, default=60, help="names timed across hosts")
    parser.add_argument("--hosts", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument(
        "--gap", type=float, default=0.0, help="ms of pause after each ADD (0: back to back)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="h1 and this client on CPU 0, the other nodes and etcd on the other CPUs",
    )
    parser.add_argument(
        "--etcd-in-memory",
        action="store_true",
        help="keep etcd's data on /dev/shm (tmpfs): no disk fsync in each etcd write",
    )
    args = parser.parse_args()

    with scratch_dir(Path("/dev/shm") if args.etcd_in_memory else None) as work:
        cluster = Cluster(work, hosts=args.hosts).start()
        try:
            results = run(cluster, args)
        finally:
            failures = cluster.close()
            if failures:
                print("teardown:", failures, file=sys.stderr)
    where = "tmpfs (/dev/shm)" if args.etcd_in_memory else "disk (the temporary directory)"
    pinned = "; pinned" if args.pin else ""
    print(f"etcd data on {where}; {args.hosts} host(s){pinned}; gap {args.gap:g} ms")
    print(results["table"])
    write_results("cluster", {k: v for k, v in results.items() if k != "table"})


def pid_of(proc_owner: Any) -> int:
    """The PID of a fixture's process (a Daemon or an EtcdServer)."""
    assert proc_owner.proc is not None
    return int(proc_owner.proc.pid)


def cpu_ms(pid: int) -> float:
    """CPU time (user + system, ms) of ``pid`` and its direct children, all threads."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])
    return total * 1000 / tick


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of ``pids`` and of their children on ``cpus``."""
    for pid in pids:
        for p in [pid, *children(pid)]:
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cpus)


def run(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    daemons = [cluster.start_daemon(h) for h in cluster.hosts]
    d1, others = daemons[0], daemons[1:]
    d1.cli("network", "create", "lb", "--subnet", "10.90.0.0/16")
    d1.cli("network", "create", "ob", "--driver", "overlay", "--subnet", "10.91.0.0/16")
    for d in others:
        wait_for("ob everywhere", lambda d=d: "ob" in d.cli("network", "ls").stdout, 10)
    procs = {"h1": pid_of(d1), **{f"h{i}": pid_of(d) for i, d in enumerate(others, 2)}}
    procs["etcd"] = pid_of(cluster.etcd[0])
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs two CPUs or more")
        os.sched_setaffinity(0, {cpus[0]})
        pin([procs["h1"]], {cpus[0]})
        pin([p for name, p in procs.items() if name != "h1"], set(cpus[1:]))
    bridge_ms: list[float] = []
    overlay_ms: list[float] = []
    cpu = {"bridge": dict.fromkeys([*procs, "client"], 0.0), "overlay": {}}
    cpu["overlay"] = dict(cpu["bridge"])
    txns = 0.0
    n = 0
    for r in range(args.rounds):
        before = etcd_counters(d1)
        for i in range(args.containers):
            a = cluster.sandbox.add_ns(f"b{r}x{i}")
            o = cluster.sandbox.add_ns(f"o{r}x{i}")
            for kind, net, ns, into in (("bridge", "lb", a, bridge_ms),
                                        ("overlay", "ob", o, overlay_ms)):  # fmt: skip
                was = {k: cpu_ms(p) for k, p in procs.items()}
                client = time.process_time()
                into.append(connect(d1, net, ns)[0])
                # What the ADD set off elsewhere (watch, syncs) is its cost: with no gap,
                # the part still running is counted with the next ADD.
                time.sleep(args.gap / 1000)
                cpu[kind]["client"] += (time.process_time() - client) * 1000
                for k, p in procs.items():
                    cpu[kind][k] += cpu_ms(p) - was[k]
        after = etcd_counters(d1)
        txns += after["transactions"] - before["transactions"]
        n += args.containers
    if not others:
        return report(args, bridge_ms, overlay_ms, txns / n, None, [], cpu, n)
    d2, d3 = others[0], others[-1]
    # The view reads of the sync are in that count; measure them alone: the same number of
    # ADDs on h2, whose watch wakes h1's sync just as h1's own ADDs did.
    before = etcd_counters(d1)
    for i in range(args.containers):
        connect(d2, "ob", cluster.sandbox.add_ns(f"w{i}"))
    time.sleep(1.0)
    sync_reads = (etcd_counters(d1)["transactions"] - before["transactions"]) / args.containers

    # Name propagation: ADD on h2, resolve on h3 (from a container on h3, its gateway DNS).
    probe = cluster.sandbox.add_ns("probe")
    connect(d3, "ob", probe)
    delays: list[float] = []
    with inside(probe), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.05)
        for i in range(args.propagation):
            ns = cluster.sandbox.add_ns(f"p{i}")
            connect(d2, "ob", ns)  # h2's API socket is a path: reachable from any namespace
            returned = time.perf_counter()
            name = f"{ns.name}.{DOMAIN}"
            while not answered(sock, "10.91.0.1", name, i + 1):
                if time.perf_counter() - returned > 5:
                    raise RuntimeError(f"{name} did not resolve on h3 within 5 s")
                time.sleep(0.002)
            delays.append((time.perf_counter() - returned) * 1000)

    return report(args, bridge_ms, overlay_ms, txns / n, sync_reads, delays, cpu, n)


def report(
    args: argparse.Namespace,
    bridge_ms: list[float],
    overlay_ms: list[float],
    per_add: float,
    sync_reads: float | None,
    delays: list[float],
    cpu: dict[str, dict[str, float]],
    n: int,
) -> dict[str, Any]:
    """The table and the JSON record of one run."""
    b50, b95 = percentile(bridge_ms, 50), percentile(bridge_ms, 95)
    o50, o95 = percentile(overlay_ms, 50), percentile(overlay_ms, 95)
    own = per_add - (sync_reads or 0.0)
    rows = [
        ["ADD p50 / p95 (ms), local bridge", f"{b50:.1f} / {b95:.1f}", ""],
        ["ADD p50 / p95 (ms), overlay", f"{o50:.1f} / {o95:.1f}", f"{o50 / b50:.2f}x bridge"],
        ["etcd transactions per overlay ADD (all)", f"{per_add:.2f}", ""],
    ]
    if sync_reads is not None:
        rows.append(["  of which view reads (sync, per remote ADD)", f"{sync_reads:.2f}", ""])
    rows.append(["  ADD's own round trips", f"{own:.2f}", "goal <= 2"])
    if delays:
        rows.append(
            [
                "name propagation h2 -> h3 p50 / p95 / p99 (ms)",
                f"{percentile(delays, 50):.0f} / {percentile(delays, 95):.0f} / "
                f"{percentile(delays, 99):.0f}",
                "goal p99 <= 1000",
            ]
        )
    for kind in ("bridge", "overlay"):
        per = ", ".join(f"{k} {v / n:.1f}" for k, v in cpu[kind].items())
        rows.append([f"CPU ms per {kind} ADD", per, "from /proc (10 ms ticks, averaged)"])
    table = format_table(["measure", "value", "note"], rows)
    return {
        "table": table,
        "machine": machine_description(),
        "hosts": args.hosts,
        "pinned": args.pin,
        "gap_ms": args.gap,
        "containers": n,
        "bridge_ms": bridge_ms,
        "overlay_ms": overlay_ms,
        "etcd_transactions_per_add": per_add,
        "sync_reads_per_remote_add": sync_reads,
        "propagation_ms": delays,
        "cpu_ms_per_add": {k: {p: v / n for p, v in c.items()} for k, c in cpu.items()},
    }


if __name__ == "__main__":
    main()
