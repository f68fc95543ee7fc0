"""DNS record update micro-benchmark: DnsManager.update_network cost vs endpoints on a network.

Run as root from the repository: ``.venv/bin/python benchmarks/bench_dns_updates.py``.

Everything runs inside a sandbox host namespace (never the initial one): a helper process there
starts a real :class:`~netd.dns.manager.DnsManager` with its unprivileged worker on a bridge
address, loads one network with N endpoints (``set_state``), then times
``update_network`` for one more endpoint (attach) and back (detach), ``--rounds`` times each,
and checks with a real UDP query that the attached name resolves as soon as the call returned.
Prints a Markdown table (median and p90 per call, in ms) and appends it to
benchmarks/results/dns_updates.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "netns-fixtures"))

from netns_fixtures import Sandbox  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")

HELPER = r"""
import ipaddress, json, socket, statistics, struct, sys, time
from netd.dns.manager import DnsManager
from netd.model import Endpoint, Network, Subnet

sizes, rounds = [int(x) for x in sys.argv[1].split(",")], int(sys.argv[2])
sub = ipaddress.ip_network("10.64.0.0/16")
net = Network(id="n" * 64, name="bench", driver="bridge", subnets=(Subnet(sub, sub[1]),))

def ep(i):
    return Endpoint(network_id=net.id, container_id=f"c{i:06d}", ifname="eth0", netns="/x",
                    host_ifname=f"v{i}", addresses=(ipaddress.ip_interface(f"{sub[i + 2]}/16"),),
                    name=f"svc{i}", aliases=(f"alias{i}",), created=float(i))

def resolves(name):
    q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\1\0\1"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(q, ("127.0.0.1", 5300))  # the host listener sees every network
    data = s.recv(512)
    s.close()
    return data[3] & 0xF == 0 and struct.unpack("!H", data[6:8])[0] > 0

mgr = DnsManager(user="nobody", host_listen="127.0.0.1:5300")
mgr.start()
out = []
try:
    for n in sizes:
        eps = [ep(i) for i in range(n)]
        mgr.set_state([(net, eps)])
        add, rem = [], []
        for r in range(rounds):
            extra = ep(n + r)
            t0 = time.perf_counter()
            mgr.update_network(net, eps + [extra])
            t1 = time.perf_counter()
            assert resolves(f"svc{n + r}"), f"svc{n + r} did not resolve after update_network"
            t2 = time.perf_counter()
            mgr.update_network(net, eps)
            t3 = time.perf_counter()
            assert not resolves(f"svc{n + r}"), f"svc{n + r} still resolves after detach"
            add.append((t1 - t0) * 1000)
            rem.append((t3 - t2) * 1000)
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
        out.append({"n": n, "add_p50": statistics.median(add), "add_p90": q(add, 0.9),
                    "del_p50": statistics.median(rem), "del_p90": q(rem, 0.9)})
finally:
    mgr.stop()
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000,5000")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--label", default="")
    args = p.parse_args()
    with Sandbox() as box:
        host = box.add_host()
        host.run("ip", "link", "add", "d0", "type", "bridge")
        host.run("ip", "addr", "add", "10.64.0.1/16", "dev", "d0")
        host.run("ip", "link", "set", "d0", "up")
        host.run("ip", "link", "set", "lo", "up")
        raw = host.run(PY, "-c", HELPER, args.sizes, str(args.rounds), timeout=600, cwd=str(ROOT))
    rows = json.loads(raw.strip().splitlines()[-1])
    lines = [
        f"update_network on one network{' (' + args.label + ')' if args.label else ''}, "
        f"{args.rounds} rounds, ms per call",
        "",
        "| endpoints | attach p50 | attach p90 | detach p50 | detach p90 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['add_p50']:.2f} | {r['add_p90']:.2f} "
            f"| {r['del_p50']:.2f} | {r['del_p90']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "dns_updates.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
