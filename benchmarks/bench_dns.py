"""DNS benchmark: netd's embedded DNS vs aardvark-dns and dnsmasq, with dnsperf, in a sandbox.

Run as root from the repository: ``.venv/bin/python benchmarks/bench_dns.py [--seconds 5]``.

Everything runs inside namespaces made by netns-fixtures (never in the initial namespace):

    host ns: br0 10.88.0.1/24 (the server under test listens on 10.88.0.1:53)
             up0 10.90.0.1/24 --- "up" ns 10.90.0.2: dnsmasq as the upstream for example.test
    client ns c1: 10.88.0.2 (dnsperf runs here; it is container "bench" in the records)

The servers run one after another on the same address with the same records: netd (via
``python -m netd.dns.standalone``), aardvark-dns (config file, network dns server = upstream)
and dnsmasq (--host-record, --server = upstream, cache on). For each of three names (a local
name, a PTR, an upstream name that the server has cached) and 1 and 10 dnsperf clients it
reports queries/s, latency percentiles (from dnsperf -v, at saturation) and server CPU time
per answer (utime+stime from /proc/PID/stat before and after). Then netd's worker memory with
0 and 10,000 records. Prints a Markdown table and writes it to benchmarks/results/dns.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "netns-fixtures"))
sys.path.insert(0, str(ROOT))

from netns_fixtures import Namespace, Sandbox  # noqa: E402

from netd.model import Endpoint, Network, Subnet, to_json  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
AARDVARK = "/usr/lib/podman/aardvark-dns"
TICK = os.sysconf("SC_CLK_TCK")
QUERIES = {
    "local name": "web A",
    "PTR": "3.0.88.10.in-addr.arpa PTR",
    "cached upstream": "www.example.test A",
}


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def server_pid(host: Namespace, comm: str) -> int:
    """The server's pid, found among the host namespace's processes by name.

    `ip netns exec` may fork, and aardvark-dns daemonizes, so the spawned pid is not it.
    """
    for _ in range(100):
        for pid in host.run("ip", "netns", "pids", host.name).split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    return int(pid)
        time.sleep(0.05)
    raise RuntimeError(f"no {comm} process in {host.name}")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def state(n_extra: int) -> list[dict[str, Any]]:
    """The netd state: bench (10.88.0.2, the client), web (10.88.0.3), n_extra more."""
    net = Network(
        id="b" * 64, name="bench", driver="bridge",
        subnets=(Subnet(ipaddress.ip_network("10.88.0.0/16"), ipaddress.ip_address("10.88.0.1")),),
    )  # fmt: skip
    eps = []
    for i, (cid, name) in enumerate([("bench", "bench"), ("web", "web")] + [
        (f"x{i}", f"x{i}") for i in range(n_extra)
    ]):  # fmt: skip
        addr = ipaddress.ip_address("10.88.0.2") + i
        eps.append(Endpoint(
            network_id=net.id, container_id=cid, ifname="eth0", netns="/x", host_ifname="v",
            addresses=(ipaddress.ip_interface(f"{addr}/16"),), name=name, state="ready",
        ))  # fmt: skip
    return [{"network": to_json(net), "endpoints": [to_json(e) for e in eps]}]


def dnsperf(client: Namespace, query_file: Path, clients: int, seconds: int,
            verbose: bool = False) -> dict[str, float]:  # fmt: skip
    # Throughput at saturation without -v (printing each answer would be the bottleneck);
    # latency percentiles from a -v run at a fixed 5,000 q/s, below every server's limit.
    extra = ["-v", "-Q", "5000"] if verbose else []
    out = client.run(
        "dnsperf", "-s", "10.88.0.1", "-d", str(query_file), "-c", str(clients),
        "-l", str(seconds), "-q", "100", "-t", "2", *extra,
        timeout=seconds + 30,
    )  # fmt: skip
    lat: list[float] = []
    qps = completed = lost = 0.0
    for line in out.splitlines():
        if line.startswith("> "):
            with contextlib.suppress(ValueError):
                lat.append(float(line.split()[-1]))
        elif "Queries per second:" in line:
            qps = float(line.split(":")[1])
        elif "Queries completed:" in line:
            completed = float(line.split(":")[1].split()[0])
        elif "Queries lost:" in line:
            lost = float(line.split(":")[1].split()[0])
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6 if lat else float("nan")

    return {"qps": qps, "completed": completed, "lost": lost,
            "p50": pct(0.50), "p99": pct(0.99), "p999": pct(0.999)}  # fmt: skip


def wait_port(host: Namespace, proto: str = "u") -> None:
    for _ in range(100):
        if ":53 " in host.run("ss", f"-ln{proto}"):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start listening on :53")


def measure(name: str, pids: list[int], client: Namespace, files: dict[str, Path], seconds: int,
            rows: list[dict[str, Any]]) -> None:  # fmt: skip
    for label, path in files.items():
        # Warm up (fills netd's precomputed answers and every server's cache).
        client.run("dig", "@10.88.0.1", "+short", *QUERIES[label].split()[:1],
                   QUERIES[label].split()[1])  # fmt: skip
        for clients in (1, 10):
            before = sum(cpu_ticks(p) for p in pids)
            r = dnsperf(client, path, clients, seconds)
            ticks = sum(cpu_ticks(p) for p in pids) - before
            r["cpu_us"] = ticks / TICK * 1e6 / r["completed"] if r["completed"] else float("nan")
            lat = dnsperf(client, path, clients, 2, verbose=True)
            r.update(p50=lat["p50"], p99=lat["p99"], p999=lat["p999"])
            rows.append({"server": name, "query": label, "clients": clients, **r})
            print(f"{name:10} {label:16} c={clients:<3} {r['qps']:>9.0f} q/s  "
                  f"p50 {r['p50']:.0f} µs  p99 {r['p99']:.0f} µs  cpu {r['cpu_us']:.1f} µs/answer  "
                  f"lost {r['lost']:.0f}", flush=True)  # fmt: skip


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(seconds: int, out_path: Path, servers: set[str], workers: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="netd-bench-"))
    tmp.chmod(0o755)
    box = Sandbox()
    try:
        host = box.add_host()
        client = box.add_ns("c1")
        up = box.add_ns("up")
        host.run("ip", "link", "add", "br0", "type", "bridge")
        host.run("ip", "addr", "add", "10.88.0.1/16", "dev", "br0")
        host.run("ip", "link", "set", "br0", "up")
        subprocess.run(["ip", "link", "add", "v1", "netns", host.name, "type", "veth", "peer",
                        "name", "eth0", "netns", client.name], check=True)  # fmt: skip
        host.run("ip", "link", "set", "v1", "master", "br0", "up")
        client.run("ip", "addr", "add", "10.88.0.2/16", "dev", "eth0")
        client.run("ip", "link", "set", "eth0", "up")
        box.wire(host, up, "10.90.0.1/24", "10.90.0.2/24")
        up.spawn("dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                 "--listen-address=10.90.0.2", "--bind-interfaces",
                 "--address=/example.test/1.2.3.4", "--local-ttl=3600",
                 "--user=root", "--pid-file=", stderr=subprocess.DEVNULL)  # fmt: skip
        files = {}
        for label, q in QUERIES.items():
            files[label] = tmp / f"{label.replace(' ', '_')}.txt"
            files[label].write_text(q + "\n")
        (tmp / "resolv.conf").write_text("nameserver 10.90.0.2\n")
        if "netd" in servers:
            run_netd(host, client, files, tmp, seconds, rows, workers)
        if "aardvark" in servers and os.access(AARDVARK, os.X_OK):
            run_aardvark(host, client, files, tmp, seconds, rows)
        if "dnsmasq" in servers and shutil.which("dnsmasq"):
            run_dnsmasq(host, client, files, seconds, rows)
    finally:
        box.close()
        shutil.rmtree(tmp, ignore_errors=True)
    table = render(rows)
    print(table)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(table)
    return rows


def run_netd(host: Namespace, client: Namespace, files: dict[str, Path], tmp: Path,
             seconds: int, rows: list[dict[str, Any]], workers: int) -> None:  # fmt: skip
    upstreams = tmp / "resolv.conf"
    state_file = tmp / "state.json"
    state_file.write_text(json.dumps(state(0)))
    proc = host.spawn(PY, "-m", "netd.dns.standalone", str(state_file), "--upstreams-from",
                      str(upstreams), "--workers", str(workers), stdout=subprocess.PIPE,
                      text=True, cwd=str(ROOT))  # fmt: skip
    assert proc.stdout is not None
    pids = json.loads(proc.stdout.readline())["worker_pids"]
    wait_port(host)
    measure("netd", pids, client, files, seconds, rows)
    # Memory per 10,000 records: same workers, before and after a reload with 10k more.
    time.sleep(0.2)
    base = sum(rss_kb(p) for p in pids)
    state_file.write_text(json.dumps(state(10000)))
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGHUP)
    proc.stdout.readline()
    reload_ms = (time.monotonic() - t0) * 1000
    for i in (5, 500, 9999):  # touch some names so lookups work on the big table
        client.run("dig", "@10.88.0.1", "+short", f"x{i}")
    mem = sum(rss_kb(p) for p in pids) - base
    rows.append({"server": "netd", "query": "memory", "rss_kb_10k": mem,
                 "reload_ms": reload_ms, "rss_kb_base": base, "workers": len(pids)})  # fmt: skip
    print(
        f"netd {len(pids)} worker(s) RSS {base} kB; +{mem} kB per 10,000 records; "
        f"set_state with 10,000 records {reload_ms:.0f} ms",
        flush=True,
    )
    stop(proc)


def run_aardvark(host: Namespace, client: Namespace, files: dict[str, Path], tmp: Path,
                 seconds: int, rows: list[dict[str, Any]]) -> None:  # fmt: skip
    conf = tmp / "aardvark"
    conf.mkdir()
    (conf / "bench").write_text(
        "10.88.0.1 10.90.0.2\n"
        + "b" * 64 + " 10.88.0.2  bench\n"
        + "w" * 64 + " 10.88.0.3  web\n"
    )  # fmt: skip
    proc = host.spawn(AARDVARK, "--config", str(conf), "-p", "53", "run",
                      stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port(host)
    daemon = server_pid(host, "aardvark-dns")
    measure("aardvark", [daemon], client, files, seconds, rows)
    stop(proc)
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon, signal.SIGTERM)  # it daemonized out of our process group
    for _ in range(100):
        if not Path(f"/proc/{daemon}").exists():
            break
        time.sleep(0.05)


def run_dnsmasq(host: Namespace, client: Namespace, files: dict[str, Path], seconds: int,
                rows: list[dict[str, Any]]) -> None:  # fmt: skip
    proc = host.spawn("dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                      "--listen-address=10.88.0.1", "--bind-interfaces",
                      "--server=10.90.0.2", "--host-record=web,10.88.0.3",
                      "--host-record=bench,10.88.0.2", "--cache-size=10000",
                      "--user=root", "--pid-file=", stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port(host)
    measure("dnsmasq", [server_pid(host, "dnsmasq")], client, files, seconds, rows)
    stop(proc)


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| query | clients | server | queries/s | p50 µs @5k q/s | p99 µs @5k q/s "
        "| CPU µs/answer | netd q/s ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    perf = [r for r in rows if r["query"] != "memory"]
    for r in perf:
        base = next(x for x in perf if x["server"] == "netd" and x["query"] == r["query"]
                    and x["clients"] == r["clients"])  # fmt: skip
        ratio = base["qps"] / r["qps"] if r["qps"] else float("nan")
        lines.append(f"| {r['query']} | {r['clients']} | {r['server']} | {r['qps']:.0f} | "
                     f"{r['p50']:.0f} | {r['p99']:.0f} | {r['cpu_us']:.1f} | "
                     f"{'—' if r['server'] == 'netd' else f'{ratio:.2f}x'} |")  # fmt: skip
    for r in rows:
        if r["query"] == "memory":
            lines.append("")
            lines.append(f"netd worker: {r['rss_kb_base']} kB RSS at start, "
                         f"+{r['rss_kb_10k']} kB for 10,000 more records; "
                         f"loading them took {r['reload_ms']:.0f} ms.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dns.md")
    p.add_argument("--servers", default="netd,aardvark,dnsmasq",
                   help="comma-separated subset of netd,aardvark,dnsmasq")  # fmt: skip
    p.add_argument("--workers", type=int, default=0,
                   help="netd DNS worker processes (0: the manager's default)")  # fmt: skip
    args = p.parse_args()
    run(args.seconds, args.out, set(args.servers.split(",")), args.workers)


if __name__ == "__main__":
    main()
